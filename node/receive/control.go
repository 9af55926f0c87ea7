package receive

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Control accepts a control message (the Accept of the control
// consumer): an erasure request (this node erases and answers), an erasure
// receipt (a recipient confirms), an agreement message, a message of an
// aggregate round, a recovery message, a member's catalogue, a dataset
// release's manifest or a provenance declaration; all but the first go to
// their handlers in Deps.
func (r *Receiver) Control(ctx context.Context, data []byte) (crypto.Header, error) {
	env, cred, err := r.codec.Check(ctx, data, 0)
	if env == nil {
		return crypto.Header{}, err
	}
	h := env.Header
	if err != nil {
		return h, err
	}
	plain, err := r.codec.Open(env)
	if err != nil {
		return h, envelope.Refuse(envelope.RefuseDecrypt, err)
	}
	switch h.Kind {
	case crypto.KindErasureRequest:
		return h, r.erase(ctx, h, cred, plain)
	case crypto.KindErasureReceipt:
		return h, r.erasureReceipt(ctx, h, plain)
	case crypto.KindAgreement:
		return h, r.agreementMessage(ctx, h, cred, plain)
	case crypto.KindAggregate:
		return h, r.aggregate(ctx, h, plain)
	case crypto.KindRecovery:
		if r.recoveryMsg == nil {
			return h, envelope.Refuse(envelope.RefuseMalformed, errors.New("recovery messages are not handled here"))
		}
		return h, r.recoveryMsg(ctx, h, cred, plain)
	case crypto.KindRelease, crypto.KindProvenance:
		handle := r.releaseMsg
		if h.Kind == crypto.KindProvenance {
			handle = r.provenanceMsg
		}
		if handle == nil {
			return h, envelope.Refuse(envelope.RefuseMalformed, fmt.Errorf("kind %d is not handled here", h.Kind))
		}
		return h, handle(ctx, h, cred, plain)
	case crypto.KindCatalogue:
		if r.catalogue == nil {
			return h, envelope.Refuse(envelope.RefuseMalformed, errors.New("catalogue messages are not handled here"))
		}
		return h, r.catalogue(ctx, h, cred, plain)
	case crypto.KindLinkage:
		if r.linkage == nil {
			return h, envelope.Refuse(envelope.RefuseMalformed, errors.New("linkage messages are not handled here"))
		}
		return h, r.linkage(ctx, h, cred, plain)
	}
	return h, envelope.Refuse(envelope.RefuseMalformed, fmt.Errorf("kind %d on the control subject", h.Kind))
}

// erase deletes, from what this node received from the provider under the
// request's agreement, every record whose subject key carries the
// request's token or one of its release tokens, and answers with a signed erasure receipt, in one
// transaction.
func (r *Receiver) erase(ctx context.Context, h crypto.Header, provider *crypto.Credential, plain []byte) error {
	var req policy.ErasureRequest
	if err := json.Unmarshal(plain, &req); err != nil || req.Validate() != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an erasure request"))
	}
	if req.Provider != h.Sender || req.Recipient != r.nodeID || req.Agreement != h.Agreement {
		return envelope.Refuse(envelope.RefuseContent, errors.New("erasure request does not match its envelope"))
	}
	now := r.now()
	deleted, fresh := 0, false
	err := r.db.Write(ctx, func(tx *sql.Tx) error {
		deleted, fresh = 0, false
		// The request is kept, for a provider restored from an older copy
		// to learn again (node/recovery), without the subject's id in
		// clear: the token names the subject to its provider.
		kept := req
		kept.SubjectInClear = ""
		keptJSON, err := json.Marshal(kept)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO erased(request, done_ms, provider, body) VALUES (?, ?, ?, ?)`,
			req.ID, now.UnixMilli(), req.Provider, r.dk.SealIf(keptJSON, erasedAAD(req.ID)))
		if err != nil {
			return fmt.Errorf("check erasure: %w", err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("check erasure: %w", err)
		}
		if k == 0 {
			return nil // a redelivered request: done already, its receipt queued then
		}
		fresh = true
		// The subject as the records carry it: the token, its token in
		// each dataset release the provider made to this node under the
		// agreement (one per release), or its id where the agreement
		// delivered that in clear. Kept as keyed hashes, as the tombstones
		// keep them: no subject's id or token is stored in clear.
		erased := map[string]bool{r.ev.Subject(req.Subject): true}
		if req.SubjectInClear != "" {
			erased[r.ev.Subject(req.SubjectInClear)] = true
		}
		for _, t := range req.ReleaseTokens {
			erased[r.ev.Subject(t)] = true
		}
		rows, err := tx.QueryContext(ctx, `SELECT r.envelope_id, r.type, r.body FROM received r JOIN inbox i ON i.envelope_id = r.envelope_id
			WHERE i.sender = ? AND i.agreement = ?`, req.Provider, req.Agreement)
		if err != nil {
			return fmt.Errorf("find records: %w", err)
		}
		type rewrite struct {
			eid     string
			body    []byte
			records int
		}
		var rw []rewrite
		for rows.Next() {
			var eid, typ string
			var body []byte
			if err := rows.Scan(&eid, &typ, &body); err != nil {
				rows.Close()
				return err
			}
			// A stored body is NDJSON or compressed NDJSON (envelope.Codec); what
			// is kept is written back compressed when that is smaller.
			plain, err := r.storedRecords(eid, body)
			if err != nil {
				rows.Close()
				return err
			}
			kept, k, gone := r.withoutSubjects(typ, plain, erased)
			if gone > 0 {
				rw = append(rw, rewrite{eid, r.dk.SealIf(envelope.CompressRecords(kept, uint32(k)), receivedAAD(eid)), k})
				deleted += gone
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, w := range rw {
			if _, err := tx.ExecContext(ctx, `UPDATE received SET body = ?, records = ? WHERE envelope_id = ?`, w.body, w.records, w.eid); err != nil {
				return fmt.Errorf("erase: %w", err)
			}
		}
		// Records of the subject still on their way, in envelopes the
		// provider created before it asked, are dropped as they arrive.
		for subject := range erased {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tombstones(sender, agreement, subject, request, before_ms) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT(sender, agreement, subject) DO UPDATE SET request = excluded.request, before_ms = excluded.before_ms
				WHERE excluded.before_ms > before_ms`, req.Provider, req.Agreement, subject, req.ID, req.Requested.UnixMilli()); err != nil {
				return fmt.Errorf("erase: keep tombstone: %w", err)
			}
		}
		if err := r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: req.Provider, Agreement: req.Agreement,
			Purpose: string(req.Purpose), Envelope: req.ID, Reason: "performed", Count: deleted}); err != nil {
			return err
		}
		rc := req.Receipt(deleted, now)
		body, err := json.Marshal(rc)
		if err != nil {
			return err
		}
		to := provider.CurrentKEMKey()
		if to == nil {
			return fmt.Errorf("erasure receipt: provider has no KEM key")
		}
		_, err = r.out.Enqueue(ctx, tx, crypto.Header{Recipient: req.Provider, Agreement: req.Agreement, Purpose: string(req.Purpose),
			Count: 1, Kind: crypto.KindErasureReceipt}, to, r.layout.ControlSubject(req.Provider, r.nodeID), body, 0)
		return err
	})
	if err != nil || !fresh {
		return err
	}
	r.m.Erasures.WithLabelValues("performed").Inc()
	r.m.RecordsErased.Add(float64(deleted))
	r.records.Add(-int64(deleted))
	r.out.Wake()
	return nil
}

// withoutSubjects returns body without the records whose subject key
// holds a subject erased names (by its keyed hash), how many records are
// kept and how many went.
func (r *Receiver) withoutSubjects(typ string, body []byte, erased map[string]bool) (kept []byte, k, gone int) {
	rt, ok := r.std.Type(typ)
	if !ok {
		return body, 0, 0
	}
	key := rt.SubjectKey()
	rd := schema.NewNDJSONReader(bytes.NewReader(body), "")
	lines := bytes.SplitAfter(body, []byte("\n"))
	li := 0
	for {
		rec, _, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		// Lines and records correspond one to one: the body was checked at
		// receipt and has no blank lines.
		line := lines[li]
		li++
		// erased holds keyed hashes of the subjects (tombstones written
		// before they were hashed hold the token itself).
		if subject, ok := rec.Fields[key].(string); err == nil && ok && (erased[r.ev.Subject(subject)] || erased[subject]) {
			gone++
			continue
		}
		kept = append(kept, line...)
		k++
	}
	if kept == nil {
		kept = []byte{}
	}
	return kept, k, gone
}
