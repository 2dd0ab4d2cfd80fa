//go:build race

package integration

// raceEnabled builds the issuer under test with the race detector when the tests run with -race.
const raceEnabled = true
