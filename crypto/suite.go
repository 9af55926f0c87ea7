package crypto

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
	"github.com/emmansun/gmsm/sm3"
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
	// SuiteSM2 is the GM/T suite: SM2 encryption (GB/T 32918.4) of a
	// fresh secret, the SM3 key derivation function and SM4-GCM, with SM2
	// signatures (GB/T 32918.2) and SM3 (GB/T 32905) for every digest
	// (ENVELOPE.md §3.1). A space selects it in its policy; it is not
	// post-quantum.
	SuiteSM2 SuiteID = 3
)

// knownSuites are the known suites, in the order their names are listed.
var knownSuites = [...]SuiteID{SuiteXWing, SuiteX25519, SuiteSM2}

// DefaultSuite is the suite a space uses unless it selects another.
const DefaultSuite = SuiteXWing

// String returns the suite's name, such as "xwing-sha256-aes128gcm".
func (s SuiteID) String() string {
	switch s {
	case SuiteXWing:
		return "xwing-sha256-aes128gcm"
	case SuiteX25519:
		return "x25519-sha256-aes128gcm"
	case SuiteSM2:
		return "sm2-sm3-sm4gcm"
	default:
		return fmt.Sprintf("suite(%d)", uint16(s))
	}
}

// Suites returns every known suite, the default first.
func Suites() []SuiteID { return slices.Clone(knownSuites[:]) } // a copy: callers cannot change what is known

// ParseSuite returns the suite with the given name (see [SuiteID.String]).
func ParseSuite(name string) (SuiteID, error) {
	var names []string
	for _, s := range knownSuites {
		if s.String() == name {
			return s, nil
		}
		names = append(names, s.String())
	}
	return 0, fmt.Errorf("unknown suite %q, want one of %s: %w", name, strings.Join(names, ", "), ErrSuite)
}

func (s SuiteID) known() bool { return slices.Contains(knownSuites[:], s) }

// NewHash returns the hash suite s uses wherever it hashes for integrity
// (envelope info and signature digests, statements, a node's evidence
// chain): SM3 for the GM/T suite, SHA-256 for the others. Both give 32
// bytes.
func (s SuiteID) NewHash() hash.Hash {
	if s == SuiteSM2 {
		return sm3.New()
	}
	return sha256.New()
}

// SignatureAlgorithm is the algorithm of the signing keys that sign
// envelopes of suite s: SM2 for the GM/T suite, Ed25519 for the others.
func (s SuiteID) SignatureAlgorithm() SignatureAlgorithm {
	if s == SuiteSM2 {
		return SM2
	}
	return Ed25519
}

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

func (s SuiteID) scheme() kem.Scheme {
	if s == SuiteSM2 {
		return sm2Scheme{}
	}
	return s.kemID().Scheme()
}

// pemType is the PEM block type of a private KEM key file of this suite.
func (s SuiteID) pemType() string {
	switch s {
	case SuiteXWing:
		return "EDUSPACE XWING KEY"
	case SuiteX25519:
		return "EDUSPACE X25519 KEY"
	case SuiteSM2:
		return "EDUSPACE SM2 KEY"
	}
	return ""
}
