package main

import (
	"fmt"
	"time"
)

// validatePositive checks a duration flag that bounds or paces work: zero or a negative value
// would not be taken as "no limit" but as a deadline already passed (or a ticker that panics),
// and the command would fail later with a misleading error such as an i/o timeout.
func validatePositive(flag string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("--%s %s must be positive", flag, d)
	}
	return nil
}
