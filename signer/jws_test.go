package signer

import (
	"bytes"
	"encoding/asn1"
	"math/big"
	"testing"
)

func TestECDSADERToJWS(t *testing.T) {
	der := func(r, s *big.Int) []byte {
		b, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	one, max256 := big.NewInt(1), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	for _, tc := range []struct {
		name string
		der  []byte
		size int
		want []byte // nil: an error
	}{
		{"small values are left-padded", der(one, big.NewInt(2)), 4, []byte{0, 0, 0, 1, 0, 0, 0, 2}},
		{"full-width values", der(max256, max256), 32, bytes.Repeat([]byte{0xff}, 64)},
		{"r too large for the curve", der(new(big.Int).Lsh(one, 256), one), 32, nil},
		{"zero s", der(one, big.NewInt(0)), 32, nil},
		{"negative r", der(big.NewInt(-1), one), 32, nil},
		{"trailing data", append(der(one, one), 0), 32, nil},
		{"not DER", []byte{1, 2, 3}, 32, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ecdsaDERToJWS(tc.der, tc.size)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %x", got)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, %v; want %x", got, err, tc.want)
			}
		})
	}
}

func TestHashForRefusesOtherAlgorithms(t *testing.T) {
	for _, alg := range []string{"", "none", "HS256", "PS256", "RS384", "EdDSA"} {
		if _, err := hashFor(alg); err == nil {
			t.Errorf("hashFor(%q) accepted", alg)
		}
	}
}
