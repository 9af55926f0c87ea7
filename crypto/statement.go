package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Signed statements: revocation lists and checkpoints share one frame
// (CREDENTIALS.md §6):
//
//	statement = magic (4 bytes) ‖ version (1 byte, 1) ‖ body ‖ composite signature
//
// The composite signature (3373 bytes) covers every byte before it under the
// statement's purpose.

// Limits of signed statements.
const (
	// MaxRevocationListSize is the largest encoded revocation list, which
	// keeps it inside NATS's default maximum payload (1 MiB).
	MaxRevocationListSize = 1 << 20
	maxReasonLen          = 256
	statementVersion1     = 1
	// checkpointVersionSM2 is a checkpoint signed with an SM2 node
	// signing key (CREDENTIALS.md §6.2).
	checkpointVersionSM2 = 2
	magicRevocationList  = "EDRL"
	magicCheckpoint      = "EDCP"
)

// statementReader decodes a statement body; the first error sticks.
type statementReader struct {
	b   []byte
	err error
}

func (r *statementReader) take(n int) []byte {
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

func (r *statementReader) u8() int {
	if v := r.take(1); v != nil {
		return int(v[0])
	}
	return 0
}

func (r *statementReader) u16() int {
	if v := r.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *statementReader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *statementReader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *statementReader) str8() string  { return string(r.take(r.u8())) }
func (r *statementReader) str16() string { return string(r.take(r.u16())) }

// millis reads a signed Unix millisecond time that must be ≥ 0.
func (r *statementReader) millis(field string) time.Time {
	v := int64(r.u64())
	if r.err == nil && v < 0 {
		r.err = fmt.Errorf("%s before 1970", field)
	}
	return time.UnixMilli(v).UTC()
}

func appendStr8(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }
func appendStr16(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}
func appendMillis(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixMilli()))
}

// validTime reports whether t is set and encodes as non-negative Unix ms.
func validTime(t time.Time) bool { return !t.IsZero() && t.UnixMilli() >= 0 }

// validKeyID reports whether s has the form of a key id: "k-", "s-" or "c-"
// and 16 lowercase hex digits (ENVELOPE.md §5, CREDENTIALS.md §2).
func validKeyID(s string) bool {
	if len(s) != 18 || s[1] != '-' || (s[0] != 'k' && s[0] != 's' && s[0] != 'c') {
		return false
	}
	for i := 2; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func validText(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// splitStatement checks the frame and returns the signed part, the body and
// the signature.
func splitStatement(data []byte, magic string) (signed, body, sig []byte, err error) {
	if len(data) < len(magic)+1+CompositeSignatureSize || string(data[:len(magic)]) != magic {
		return nil, nil, nil, errors.New("bad magic or too short")
	}
	if v := data[len(magic)]; v != statementVersion1 {
		return nil, nil, nil, fmt.Errorf("unsupported version %d", v)
	}
	n := len(data) - CompositeSignatureSize
	return data[:n:n], data[len(magic)+1 : n : n], data[n:], nil
}

// RevocationList is the authority's signed list of revoked nodes and keys in
// one space. A newer list has a larger Serial; a node keeps the list with the
// largest serial it has verified and ignores older ones.
type RevocationList struct {
	Space   string
	Serial  uint64 // ≥ 1, grows with every list the authority signs
	Issued  time.Time
	Entries []Revocation
}

// Revocation revokes a node, or one of its keys, from a time on.
type Revocation struct {
	NodeID  string
	KeyID   string // a key id ("k-…", "s-…", "c-…"), or empty for the whole node
	Revoked time.Time
	Reason  string // up to 256 bytes of text, no control characters
}

func (rl *RevocationList) validate() error {
	if !validName(rl.Space) {
		return errors.New("invalid space name")
	}
	if rl.Serial == 0 {
		return errors.New("serial 0")
	}
	if !validTime(rl.Issued) {
		return errors.New("invalid issue time")
	}
	for i, e := range rl.Entries {
		if !validName(e.NodeID) {
			return fmt.Errorf("entry %d: invalid node id", i)
		}
		if e.KeyID != "" && !validKeyID(e.KeyID) {
			return fmt.Errorf("entry %d: invalid key id", i)
		}
		if !validTime(e.Revoked) {
			return fmt.Errorf("entry %d: invalid revocation time", i)
		}
		if !validText(e.Reason, maxReasonLen) {
			return fmt.Errorf("entry %d: invalid reason", i)
		}
	}
	return nil
}

// appendTo encodes magic, version and body (CREDENTIALS.md §6.1).
func (rl *RevocationList) appendTo(b []byte) []byte {
	b = append(b, magicRevocationList...)
	b = append(b, statementVersion1)
	b = appendStr8(b, rl.Space)
	b = binary.BigEndian.AppendUint64(b, rl.Serial)
	b = appendMillis(b, rl.Issued)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rl.Entries)))
	for _, e := range rl.Entries {
		b = appendStr8(b, e.NodeID)
		b = appendStr8(b, e.KeyID)
		b = appendMillis(b, e.Revoked)
		b = appendStr16(b, e.Reason)
	}
	return b
}

// SignRevocations encodes rl and signs it with the composite root key under
// purpose "revocation-list" (CREDENTIALS.md §6.1). Times are truncated to
// milliseconds.
func (a *AuthorityKey) SignRevocations(rl RevocationList) ([]byte, error) {
	if err := rl.validate(); err != nil {
		return nil, fmt.Errorf("sign revocation list: %w", err)
	}
	b := rl.appendTo(nil)
	if len(b)+CompositeSignatureSize > MaxRevocationListSize {
		return nil, fmt.Errorf("sign revocation list: %d entries exceed %d bytes", len(rl.Entries), MaxRevocationListSize)
	}
	sig, err := a.ck.Sign(PurposeRevocationList, b)
	if err != nil {
		return nil, fmt.Errorf("sign revocation list: %w", err)
	}
	return append(b, sig...), nil
}

// minRevocationSize is the smallest encoded entry.
const minRevocationSize = 1 + 1 + 1 + 8 + 2

// ParseRevocationList decodes data strictly, verifies its composite signature
// with the root key and checks that it is for space. It does not compare
// serials: the caller keeps the newest list it has seen and must refuse one
// whose Serial is not larger (or equal, for the same list again). Signature
// failures wrap [ErrCompositeSignature].
func ParseRevocationList(data []byte, root AuthorityPublicKey, space string) (*RevocationList, error) {
	rl, signed, sig, err := decodeRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("parse revocation list: %w", err)
	}
	if err := root.cv.Verify(PurposeRevocationList, signed, sig); err != nil {
		return nil, fmt.Errorf("parse revocation list: %w", err)
	}
	if rl.Space != space {
		return nil, fmt.Errorf("parse revocation list: for space %q, want %q", rl.Space, space)
	}
	return rl, nil
}

// decodeRevocationList decodes and checks a revocation list without
// verifying its signature.
func decodeRevocationList(data []byte) (rl *RevocationList, signed, sig []byte, err error) {
	if len(data) > MaxRevocationListSize {
		return nil, nil, nil, fmt.Errorf("larger than %d bytes", MaxRevocationListSize)
	}
	signed, body, sig, err := splitStatement(data, magicRevocationList)
	if err != nil {
		return nil, nil, nil, err
	}
	r := &statementReader{b: body}
	rl = &RevocationList{Space: r.str8(), Serial: r.u64(), Issued: r.millis("issue time")}
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)/minRevocationSize) {
		r.err = fmt.Errorf("%d entries cannot fit", n)
	}
	if r.err == nil && n > 0 {
		rl.Entries = make([]Revocation, 0, n)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		rl.Entries = append(rl.Entries, Revocation{
			NodeID:  r.str8(),
			KeyID:   r.str8(),
			Revoked: r.millis("revocation time"),
			Reason:  r.str16(),
		})
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes")
	}
	if r.err != nil {
		return nil, nil, nil, r.err
	}
	if err := rl.validate(); err != nil {
		return nil, nil, nil, err
	}
	return rl, signed, sig, nil
}

// Revoked reports whether, at time at, the node nodeID is revoked or, when
// keyID is not empty, its key keyID is. An entry applies from its Revoked
// time on: an entry without a key id revokes every key of the node, an entry
// with one revokes only that key. Pass the time the statement in question was
// made or is used (usually now).
func (rl *RevocationList) Revoked(nodeID, keyID string, at time.Time) bool {
	if rl == nil {
		return false
	}
	for _, e := range rl.Entries {
		if e.NodeID == nodeID && (e.KeyID == "" || e.KeyID == keyID) && !at.Before(e.Revoked) {
			return true
		}
	}
	return false
}

// Supersedes reports whether rl is newer than old (has a larger Serial). A
// nil old is superseded by any list.
func (rl *RevocationList) Supersedes(old *RevocationList) bool {
	return old == nil || rl.Serial > old.Serial
}

// Checkpoint commits a node's evidence log: after Count entries the hash
// chain's head was Head (DESIGN.md §6).
type Checkpoint struct {
	Space, Node string
	Count       uint64
	Head        [32]byte
	Time        time.Time // truncated to milliseconds when signed
}

// ErrUnknownCheckpointKey is returned by [Credential.VerifyCheckpoint]
// when the credential lists no key that signs checkpoints under the id the
// checkpoint names: perhaps the credential held is older than the key.
var ErrUnknownCheckpointKey = errors.New("unknown checkpoint key")

// maxCheckpointSize bounds an encoded checkpoint: frame, three len8 strings
// of at most 64 bytes, count, head, time and signature.
const maxCheckpointSize = len(magicCheckpoint) + 1 + 3*(1+64) + 8 + 32 + 8 + CompositeSignatureSize

func (c *Checkpoint) validate() error {
	if !validName(c.Space) {
		return errors.New("invalid space name")
	}
	if !validName(c.Node) {
		return errors.New("invalid node id")
	}
	if !validTime(c.Time) {
		return errors.New("invalid time")
	}
	return nil
}

func (c *Checkpoint) appendTo(b []byte, keyID string) []byte {
	b = append(b, magicCheckpoint...)
	if keyID[0] == 's' {
		b = append(b, checkpointVersionSM2)
	} else {
		b = append(b, statementVersion1)
	}
	b = appendStr8(b, c.Space)
	b = appendStr8(b, c.Node)
	b = appendStr8(b, keyID)
	b = binary.BigEndian.AppendUint64(b, c.Count)
	b = append(b, c.Head[:]...)
	return appendMillis(b, c.Time)
}

// SignCheckpoint encodes c, naming k's key id, and signs it with k under
// purpose "checkpoint" (CREDENTIALS.md §6.2).
func SignCheckpoint(k *CompositeKey, c Checkpoint) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	b := c.appendTo(nil, k.Public().KeyID())
	sig, err := k.Sign(PurposeCheckpoint, b)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return append(b, sig...), nil
}

// SignCheckpointSM2 encodes c, naming k's key id, and signs it with k, an
// SM2 node signing key, under purpose "checkpoint": the checkpoint of a
// node on the GM/T suite (CREDENTIALS.md §6.2, version 2).
func SignCheckpointSM2(k *SigningKey, c Checkpoint) ([]byte, error) {
	if k.Algorithm() != SM2 {
		return nil, fmt.Errorf("sign checkpoint: an SM2 key is needed, got %s: sign with SignCheckpoint and a composite key", k.Algorithm())
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	b := c.appendTo(nil, k.Public().KeyID())
	return append(b, k.Sign(sm2StatementMessage(PurposeCheckpoint, b))...), nil
}

// sm2StatementMessage is the message an SM2 key signs for a statement of
// purpose (CREDENTIALS.md §6.2):
//
//	"eduspace sm2 statement v1" ‖ 0x00 ‖ len8(purpose) ‖ purpose ‖ SM3(msg)
//
// It is longer than 32 bytes, so never an envelope's signed digest.
func sm2StatementMessage(purpose string, msg []byte) []byte {
	d := SuiteSM2.NewHash()
	d.Write(msg)
	m := append([]byte(labelSM2Statement), 0, byte(len(purpose)))
	m = append(m, purpose...)
	return d.Sum(m)
}

const labelSM2Statement = "eduspace sm2 statement v1"

// parseCheckpoint decodes a checkpoint without verifying it: version 1,
// signed by a composite key ("c-…"), or version 2, by an SM2 signing key
// ("s-…").
func parseCheckpoint(data []byte) (c *Checkpoint, keyID string, signed, sig []byte, err error) {
	if len(data) > maxCheckpointSize {
		return nil, "", nil, nil, errors.New("too large")
	}
	var body []byte
	v2 := len(data) > len(magicCheckpoint) && data[len(magicCheckpoint)] == checkpointVersionSM2
	if v2 {
		if len(data) < len(magicCheckpoint)+1+sm2SignatureSize || string(data[:len(magicCheckpoint)]) != magicCheckpoint {
			return nil, "", nil, nil, errors.New("bad magic or too short")
		}
		n := len(data) - sm2SignatureSize
		signed, body, sig = data[:n:n], data[len(magicCheckpoint)+1:n:n], data[n:]
	} else if signed, body, sig, err = splitStatement(data, magicCheckpoint); err != nil {
		return nil, "", nil, nil, err
	}
	r := &statementReader{b: body}
	c = &Checkpoint{Space: r.str8(), Node: r.str8()}
	keyID = r.str8()
	c.Count = r.u64()
	copy(c.Head[:], r.take(32))
	c.Time = r.millis("time")
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes")
	}
	if r.err != nil {
		return nil, "", nil, nil, r.err
	}
	if err := c.validate(); err != nil {
		return nil, "", nil, nil, err
	}
	want := byte('c')
	if v2 {
		want = 's'
	}
	if !validKeyID(keyID) || keyID[0] != want {
		return nil, "", nil, nil, errors.New("invalid key id for the checkpoint's version")
	}
	return c, keyID, signed, sig, nil
}

// CheckpointSigner returns the node and key id a checkpoint names, without
// verifying it, so that the verifier can find the key in the node's
// credential. Nothing else of an unverified checkpoint may be used.
func CheckpointSigner(data []byte) (node, keyID string, err error) {
	c, keyID, _, _, err := parseCheckpoint(data)
	if err != nil {
		return "", "", fmt.Errorf("parse checkpoint: %w", err)
	}
	return c.Node, keyID, nil
}

// ParseCheckpoint decodes data strictly and verifies its composite signature
// with vk, which must be the key the checkpoint names. The caller checks
// that Space and Node are what it expects and that vk is a checkpoint key of
// Node's credential. Signature failures wrap [ErrCompositeSignature].
func ParseCheckpoint(data []byte, vk CompositeVerifyKey) (*Checkpoint, error) {
	c, keyID, signed, sig, err := parseCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("parse checkpoint: %w", err)
	}
	if keyID != vk.KeyID() {
		return nil, fmt.Errorf("parse checkpoint: signed by key %s, not %s: %w", keyID, vk.KeyID(), ErrCompositeSignature)
	}
	if err := vk.Verify(PurposeCheckpoint, signed, sig); err != nil {
		return nil, fmt.Errorf("parse checkpoint: %w", err)
	}
	return c, nil
}

// ParseCheckpointSM2 decodes data strictly and verifies its SM2 signature
// (version 2) with vk, which must be the SM2 signing key the checkpoint
// names. The caller checks Space and Node, and that vk is a signing key of
// Node's credential. Signature failures wrap [ErrSignature].
func ParseCheckpointSM2(data []byte, vk VerifyKey) (*Checkpoint, error) {
	c, keyID, signed, sig, err := parseCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("parse checkpoint: %w", err)
	}
	if keyID != vk.KeyID() || vk.Algorithm() != SM2 {
		return nil, fmt.Errorf("parse checkpoint: signed by key %s, not by the SM2 key %s: %w", keyID, vk.KeyID(), ErrSignature)
	}
	if !vk.Verify(sm2StatementMessage(PurposeCheckpoint, signed), sig) {
		return nil, fmt.Errorf("parse checkpoint: SM2 signature invalid: %w", ErrSignature)
	}
	return c, nil
}

// HasCheckpointKey reports whether c lists a key that signs checkpoints
// under id: a composite checkpoint key, or an SM2 signing key.
func (c *Credential) HasCheckpointKey(id string) bool {
	if _, ok := c.CheckpointKey(id); ok {
		return true
	}
	v, ok := c.SigningKey(id)
	return ok && v.Algorithm() == SM2
}

// VerifyCheckpoint verifies data with the key of c it names: a composite
// checkpoint key (version 1) or an SM2 signing key (version 2). A key c
// does not list gives [ErrUnknownCheckpointKey]; the caller checks Space,
// Node and revocation as for [ParseCheckpoint].
func (c *Credential) VerifyCheckpoint(data []byte) (*Checkpoint, error) {
	_, keyID, err := CheckpointSigner(data)
	if err != nil {
		return nil, err
	}
	if vk, ok := c.CheckpointKey(keyID); ok {
		return ParseCheckpoint(data, vk)
	}
	if v, ok := c.SigningKey(keyID); ok && v.Algorithm() == SM2 {
		return ParseCheckpointSM2(data, v)
	}
	return nil, fmt.Errorf("credential of %s lists no checkpoint key %s: %w", c.NodeID, keyID, ErrUnknownCheckpointKey)
}
