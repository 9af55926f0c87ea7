package node

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/schema"
)

// refusal is a permanent reason not to accept an envelope.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.reason + ": " + r.err.Error() }

func refuse(reason string, err error) error { return &refusal{reason: reason, err: err} }

// receive handles one message with accept: a refused envelope is recorded
// and terminated, a transient failure is retried later, an accepted
// envelope is stored and then acknowledged.
func (n *Node) receive(ctx context.Context, msg jetstream.Msg, accept func(context.Context, []byte) (crypto.Header, error)) {
	h, err := accept(ctx, msg.Data())
	var ref *refusal
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			// The envelope is stored; a redelivery will be seen as a duplicate.
			n.log.Warn("ack delivery", "err", err)
		}
	case errors.As(err, &ref):
		n.m.Refused.WithLabelValues(ref.reason).Inc()
		n.log.Warn("envelope refused", "reason", ref.reason, "sender", h.Sender, "envelope", h.IDString(), "err", ref.err)
		if err := n.db.Write(ctx, func(tx *sql.Tx) error {
			return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: h.Sender,
				Envelope: h.IDString(), Reason: ref.reason})
		}); err != nil {
			n.log.Error("record refusal in evidence log; will retry", "err", err)
			msg.NakWithDelay(time.Second)
			return
		}
		msg.Term()
	default:
		if ctx.Err() != nil {
			return // shutting down: the message is redelivered after AckWait
		}
		n.log.Warn("delivery failed; will retry", "err", err)
		msg.NakWithDelay(redeliveryDelay(msg))
	}
}

func redeliveryDelay(msg jetstream.Msg) time.Duration {
	d := 250 * time.Millisecond
	if md, err := msg.Metadata(); err == nil {
		for i := uint64(1); i < md.NumDelivered && d < 30*time.Second; i++ {
			d *= 2
		}
	}
	return min(d, 30*time.Second)
}

// check parses an envelope addressed to this node and checks everything
// that needs no database: addressee, key, expiry, the sender's credential
// and signature. It returns the parsed envelope (nil when unparseable) and
// the sender's credential, or a *refusal or a transient error.
func (n *Node) check(ctx context.Context, data []byte, kind uint8) (*crypto.Envelope, *crypto.Credential, error) {
	env, err := crypto.ParseEnvelope(data)
	if err != nil {
		return nil, nil, refuse(RefuseMalformed, err)
	}
	h := env.Header
	if kind != 0 && h.Kind != kind { // kind 0: the caller checks the kind
		return env, nil, refuse(RefuseMalformed, fmt.Errorf("kind %d on a subject for kind %d", h.Kind, kind))
	}
	if h.Recipient != n.cfg.NodeID {
		return env, nil, refuse(RefuseMisaddressed, fmt.Errorf("addressed to %q", h.Recipient))
	}
	// Keys by id: after a rotation, envelopes sealed to any KEM key the
	// node's credential still lists open (CREDENTIALS.md §5).
	priv, ok := n.keys.KEMKey(h.RecipientKeyID)
	if !ok {
		return env, nil, refuse(RefuseUnknownKey, fmt.Errorf("no KEM key %q", h.RecipientKeyID))
	}
	if priv.Suite() != h.Suite {
		return env, nil, refuse(RefuseUnknownKey, fmt.Errorf("envelope of suite %s names KEM key %q of suite %s", h.Suite, h.RecipientKeyID, priv.Suite()))
	}
	now := n.now()
	if n.reg.Revoked(n.cfg.NodeID, h.RecipientKeyID, now) {
		return env, nil, refuse(RefuseRevoked, fmt.Errorf("sealed to this node's revoked key %q", h.RecipientKeyID))
	}
	if !now.Before(h.Expires) {
		return env, nil, refuse(RefuseExpired, fmt.Errorf("expired at %s", h.Expires.UTC().Format(time.RFC3339)))
	}
	// The time checked is now, not the envelope's created time, which the
	// holder of a revoked key could set at will.
	if err := n.reg.CheckRevoked(h.Sender, h.SenderKeyID, now); err != nil {
		return env, nil, refuse(RefuseRevoked, err)
	}
	cred, err := n.reg.Lookup(ctx, h.Sender)
	vk, ok := crypto.VerifyKey{}, false
	if err == nil {
		if vk, ok = cred.SigningKey(h.SenderKeyID); !ok {
			// The sender may have rotated its keys since its credential was
			// cached.
			cred, err = n.reg.LookupFresh(ctx, h.Sender)
		}
	}
	if errors.Is(err, registry.ErrUnknownMember) {
		return env, nil, refuse(RefuseUnknownPeer, err)
	}
	if err != nil {
		return env, nil, err
	}
	if !ok {
		if vk, ok = cred.SigningKey(h.SenderKeyID); !ok {
			return env, nil, refuse(RefuseUnknownKey, fmt.Errorf("sender has no signing key %q", h.SenderKeyID))
		}
	}
	if err := env.Verify(vk); err != nil {
		return env, nil, refuse(RefuseSignature, err)
	}
	return env, cred, nil
}

// lineChecker is checkRecords' parser, the map it reuses for each
// record's fields, and the member names of the last line that the type
// has, by position (lines of one envelope name their members alike).
type lineChecker struct {
	p      *schema.LineParser
	fields map[string]any
	typ    *schema.RecordType
	known  []string
}

var lineCheckers sync.Pool

// maxKnownMembers bounds the member names a lineChecker remembers.
const maxKnownMembers = 256

// checkRecords checks an envelope's plaintext before it is stored: NDJSON
// of exactly h.Count records, each of the header's record type and with
// only fields that type has. Values are not validated against the
// standard: tokenised and generalised values are not meant to pass it.
func (n *Node) checkRecords(plain []byte, h crypto.Header) error {
	rt, ok := n.std.Type(h.RecordType)
	if !ok {
		return fmt.Errorf("unknown record type %q", h.RecordType)
	}
	if _, err := schema.ParseLevel(h.Level); err != nil {
		return fmt.Errorf("header level: %w", err)
	}
	// One record per line and nothing else: erasure relies on lines and
	// records matching one to one.
	if len(plain) == 0 || plain[0] == '\n' || bytes.Contains(plain, []byte("\n\n")) || plain[len(plain)-1] != '\n' {
		return fmt.Errorf("empty lines or no final newline")
	}
	lc, _ := lineCheckers.Get().(*lineChecker)
	if lc == nil {
		lc = &lineChecker{p: schema.NewLineParser(""), fields: map[string]any{}}
	}
	defer lineCheckers.Put(lc)
	if lc.typ != rt {
		lc.typ, lc.known = rt, lc.known[:0]
	}
	foreign := false // a member name the type does not have
	k := 0           // the member's position in its line
	member := func(name string) {
		pos := k
		k++
		if pos < len(lc.known) && lc.known[pos] == name {
			return
		}
		if _, ok := rt.FieldIndex(name); !ok {
			foreign = true
			return
		}
		if pos < len(lc.known) {
			lc.known[pos] = name
		} else if pos == len(lc.known) && pos < maxKnownMembers {
			lc.known = append(lc.known, name)
		}
	}
	count := 0
	for rest := plain; len(rest) > 0; count++ {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		k = 0
		typ, ok := lc.p.Members(line, member)
		if !ok {
			// Not plain values only: read it whole.
			rec, verr := lc.p.Parse(line, lc.fields)
			if verr != nil {
				return fmt.Errorf("record %d: not a record", count)
			}
			typ = rec.Type
			k = maxKnownMembers + 1 // by name: positions mean nothing here
			for f := range rec.Fields {
				member(f)
			}
		}
		if typ != h.RecordType {
			return fmt.Errorf("record %d: type differs from the header", count)
		}
		if foreign {
			return fmt.Errorf("record %d: field not in type %s", count, h.RecordType)
		}
	}
	if count != int(h.Count) {
		return fmt.Errorf("header says %d records, envelope holds %d", h.Count, count)
	}
	return nil
}
