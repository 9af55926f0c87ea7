package crypto

import (
	"fmt"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

// SuiteID names an HPKE cipher suite used for envelopes. It is written as a
// uint16 in the envelope header.
type SuiteID uint16

const (
	// SuiteXWing is X-Wing (X25519 + ML-KEM-768) with HKDF-SHA256 and
	// AES-128-GCM, a post-quantum hybrid. It is the default.
	SuiteXWing SuiteID = 1
	// SuiteX25519 is DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256 and
	// AES-128-GCM.
	SuiteX25519 SuiteID = 2
)

// DefaultSuite is the suite a space uses unless it selects another.
const DefaultSuite = SuiteXWing

// String returns the suite's name, such as "xwing-sha256-aes128gcm".
func (s SuiteID) String() string {
	switch s {
	case SuiteXWing:
		return "xwing-sha256-aes128gcm"
	case SuiteX25519:
		return "x25519-sha256-aes128gcm"
	default:
		return fmt.Sprintf("suite(%d)", uint16(s))
	}
}

// ParseSuite returns the suite with the given name (see [SuiteID.String]).
func ParseSuite(name string) (SuiteID, error) {
	for _, s := range []SuiteID{SuiteXWing, SuiteX25519} {
		if s.String() == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown suite %q: %w", name, ErrSuite)
}

func (s SuiteID) known() bool { return s == SuiteXWing || s == SuiteX25519 }

func (s SuiteID) hpke() hpke.Suite {
	return hpke.NewSuite(s.kemID(), hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM)
}

func (s SuiteID) kemID() hpke.KEM {
	switch s {
	case SuiteXWing:
		return hpke.KEM_XWING
	case SuiteX25519:
		return hpke.KEM_X25519_HKDF_SHA256
	}
	panic("crypto: unknown suite") // callers check known() first
}

func (s SuiteID) scheme() kem.Scheme { return s.kemID().Scheme() }

// pemType is the PEM block type of a private KEM key file of this suite.
func (s SuiteID) pemType() string {
	switch s {
	case SuiteXWing:
		return "EDUSPACE XWING KEY"
	case SuiteX25519:
		return "EDUSPACE X25519 KEY"
	}
	return ""
}
