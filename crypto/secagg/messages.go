package secagg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// The four messages of a round. Each encodes as
//
//	magic (4 bytes) ‖ version (1 byte, 1) ‖ round digest (32 bytes) ‖ body
//
// with strings as str8 (one length byte) and integers big-endian. The node
// signs every encoded message with its signing key before sending it; a
// [ShareBundle] is moreover secret and must be encrypted to its recipient.
const (
	magicCommitment = "ESAC"
	magicShares     = "ESAS"
	magicMasked     = "ESAM"
	magicUnmask     = "ESAU"
	scalarLen       = 32
	elementLen      = 32
)

// Commitment publishes a participant's two public values for the round:
// MaskKey, its Ristretto255 key-agreement public key, and SelfKey, the
// public point of its self-mask seed, which lets the center check the seed
// it recovers. Both are canonical 32-byte Ristretto255 encodings.
//
//	body = str8(from) ‖ mask key (32) ‖ self key (32)
type Commitment struct {
	Round   [32]byte
	From    string
	MaskKey [elementLen]byte
	SelfKey [elementLen]byte
}

// ShareBundle carries, from one participant to another, the recipient's
// Shamir shares of the sender's key-agreement private key (MaskShare) and of
// its self-mask seed (SelfShare), as canonical 32-byte Ristretto255 scalars;
// the share id is the recipient's index + 1. It is secret: encrypt it to the
// recipient. It prints as redacted.
//
//	body = str8(from) ‖ str8(to) ‖ mask share (32) ‖ self share (32)
type ShareBundle struct {
	Round     [32]byte
	From, To  string
	MaskShare [scalarLen]byte
	SelfShare [scalarLen]byte
}

// MaskedInput is a participant's masked vector. Shared is the digest of the
// set of participants it masked with (those whose share bundles it
// received); the center checks that all agree.
//
//	body = str8(from) ‖ shared digest (32) ‖ u32(len) ‖ len × u64
type MaskedInput struct {
	Round  [32]byte
	From   string
	Shared [32]byte
	Vector []uint64
}

// UnmaskResponse is a surviving participant's answer to the list of
// survivors: its shares of each survivor's self-mask seed (SelfShares) and
// of each dropped participant's key-agreement key (MaskShares), in index
// order. Survivors is the digest of the survivor set it answered.
//
//	body = str8(from) ‖ survivors digest (32) ‖
//	       u16(k) ‖ k × (str8(of) ‖ share (32)) ‖ u16(m) ‖ m × (str8(of) ‖ share (32))
type UnmaskResponse struct {
	Round      [32]byte
	From       string
	Survivors  [32]byte
	SelfShares []RevealedShare
	MaskShares []RevealedShare
}

// RevealedShare is the responder's share of participant Of's secret.
type RevealedShare struct {
	Of    string
	Share [scalarLen]byte
}

func header(magic string, round *[32]byte, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, magic...)
	b = append(b, version1)
	return append(b, round[:]...)
}

// MarshalBinary encodes c.
func (c Commitment) MarshalBinary() ([]byte, error) {
	b := header(magicCommitment, &c.Round, 37+1+len(c.From)+64)
	b = appendStr8(b, c.From)
	b = append(b, c.MaskKey[:]...)
	return append(b, c.SelfKey[:]...), nil
}

// MarshalBinary encodes b. The result is secret.
func (s ShareBundle) MarshalBinary() ([]byte, error) {
	b := header(magicShares, &s.Round, 37+2+len(s.From)+len(s.To)+64)
	b = appendStr8(b, s.From)
	b = appendStr8(b, s.To)
	b = append(b, s.MaskShare[:]...)
	return append(b, s.SelfShare[:]...), nil
}

// String returns a redacted description.
func (s ShareBundle) String() string { return "ShareBundle(" + s.From + " → " + s.To + ", redacted)" }

// Format prints the redacted [ShareBundle.String] for every verb.
func (s ShareBundle) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// LogValue keeps the shares out of structured logs.
func (s ShareBundle) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalBinary encodes m.
func (m MaskedInput) MarshalBinary() ([]byte, error) {
	b := header(magicMasked, &m.Round, 37+1+len(m.From)+32+4+8*len(m.Vector))
	b = appendStr8(b, m.From)
	b = append(b, m.Shared[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Vector)))
	for _, v := range m.Vector {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b, nil
}

// MarshalBinary encodes u.
func (u UnmaskResponse) MarshalBinary() ([]byte, error) {
	b := header(magicUnmask, &u.Round, 37+1+len(u.From)+32+4+(len(u.SelfShares)+len(u.MaskShares))*(1+64+32))
	b = appendStr8(b, u.From)
	b = append(b, u.Survivors[:]...)
	for _, list := range [][]RevealedShare{u.SelfShares, u.MaskShares} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(list)))
		for _, s := range list {
			b = appendStr8(b, s.Of)
			b = append(b, s.Share[:]...)
		}
	}
	return b, nil
}

// reader decodes a message body; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	if v := r.take(1); v != nil {
		return int(v[0])
	}
	return 0
}

func (r *reader) u16() int {
	if v := r.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *reader) u32() int {
	if v := r.take(4); v != nil {
		return int(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (r *reader) str8() string { return string(r.take(r.u8())) }

func (r *reader) fixed(dst []byte) { copy(dst, r.take(len(dst))) }

// open checks magic, version and round digest and returns a reader on the
// body.
func (rd *Round) open(data []byte, magic string) (*reader, error) {
	if len(data) < 37 || string(data[:4]) != magic {
		return nil, errors.New("bad magic or too short")
	}
	if data[4] != version1 {
		return nil, fmt.Errorf("unsupported version %d", data[4])
	}
	if [32]byte(data[5:37]) != rd.ctx {
		return nil, errors.New("for another round")
	}
	return &reader{b: data[37:]}, nil
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes")
	}
	return r.err
}

// ParseCommitment decodes a commitment of this round strictly.
func (rd *Round) ParseCommitment(data []byte) (Commitment, error) {
	r, err := rd.open(data, magicCommitment)
	if err != nil {
		return Commitment{}, fmt.Errorf("parse commitment: %w", err)
	}
	c := Commitment{Round: rd.ctx, From: r.str8()}
	r.fixed(c.MaskKey[:])
	r.fixed(c.SelfKey[:])
	if err := r.done(); err != nil {
		return Commitment{}, fmt.Errorf("parse commitment: %w", err)
	}
	if _, _, err := rd.checkCommitment(c); err != nil {
		return Commitment{}, fmt.Errorf("parse commitment: %w", err)
	}
	return c, nil
}

// ParseShareBundle decodes a share bundle of this round strictly.
func (rd *Round) ParseShareBundle(data []byte) (ShareBundle, error) {
	r, err := rd.open(data, magicShares)
	if err != nil {
		return ShareBundle{}, fmt.Errorf("parse share bundle: %w", err)
	}
	s := ShareBundle{Round: rd.ctx, From: r.str8(), To: r.str8()}
	r.fixed(s.MaskShare[:])
	r.fixed(s.SelfShare[:])
	if err := r.done(); err != nil {
		return ShareBundle{}, fmt.Errorf("parse share bundle: %w", err)
	}
	for _, id := range []string{s.From, s.To} {
		if _, ok := rd.index[id]; !ok {
			return ShareBundle{}, fmt.Errorf("parse share bundle: %q is not a participant", id)
		}
	}
	if _, err := parseScalar(s.MaskShare[:]); err != nil {
		return ShareBundle{}, fmt.Errorf("parse share bundle: mask share: %w", err)
	}
	if _, err := parseScalar(s.SelfShare[:]); err != nil {
		return ShareBundle{}, fmt.Errorf("parse share bundle: self share: %w", err)
	}
	return s, nil
}

// ParseMaskedInput decodes a masked vector of this round strictly.
func (rd *Round) ParseMaskedInput(data []byte) (MaskedInput, error) {
	r, err := rd.open(data, magicMasked)
	if err != nil {
		return MaskedInput{}, fmt.Errorf("parse masked input: %w", err)
	}
	m := MaskedInput{Round: rd.ctx, From: r.str8()}
	r.fixed(m.Shared[:])
	n := r.u32()
	if r.err == nil && n != rd.n {
		r.err = fmt.Errorf("%d cells, want %d", n, rd.n)
	}
	if raw := r.take(8 * n); r.err == nil {
		m.Vector = make([]uint64, n)
		for i := range m.Vector {
			m.Vector[i] = binary.BigEndian.Uint64(raw[8*i:])
		}
	}
	if err := r.done(); err != nil {
		return MaskedInput{}, fmt.Errorf("parse masked input: %w", err)
	}
	if _, ok := rd.index[m.From]; !ok {
		return MaskedInput{}, fmt.Errorf("parse masked input: %q is not a participant", m.From)
	}
	return m, nil
}

// ParseUnmaskResponse decodes an unmask response of this round strictly.
func (rd *Round) ParseUnmaskResponse(data []byte) (UnmaskResponse, error) {
	r, err := rd.open(data, magicUnmask)
	if err != nil {
		return UnmaskResponse{}, fmt.Errorf("parse unmask response: %w", err)
	}
	u := UnmaskResponse{Round: rd.ctx, From: r.str8()}
	r.fixed(u.Survivors[:])
	for _, list := range []*[]RevealedShare{&u.SelfShares, &u.MaskShares} {
		k := r.u16()
		if r.err == nil && k > len(rd.ids) {
			r.err = fmt.Errorf("%d shares for %d participants", k, len(rd.ids))
		}
		for i := 0; i < k && r.err == nil; i++ {
			s := RevealedShare{Of: r.str8()}
			r.fixed(s.Share[:])
			*list = append(*list, s)
		}
	}
	if err := r.done(); err != nil {
		return UnmaskResponse{}, fmt.Errorf("parse unmask response: %w", err)
	}
	if _, ok := rd.index[u.From]; !ok {
		return UnmaskResponse{}, fmt.Errorf("parse unmask response: %q is not a participant", u.From)
	}
	return u, nil
}
