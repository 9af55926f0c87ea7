package receive

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// SenderState is what this node holds from a sender that was restored from
// an older copy of its database, for its recovery (node/recovery).
type SenderState struct {
	// Last is the highest sequence number of records envelopes stored
	// from the sender (0: none).
	Last int64 `json:"last"`
	// Held are the envelopes asked about that are stored here.
	Held []string `json:"held,omitempty"`
	// Beyond and BeyondRecords count the envelopes, and the records they
	// carried at arrival, stored with sequence numbers above those the
	// sender's copy knows it gave: what it does not know it sent.
	Beyond        int64 `json:"beyond"`
	BeyondRecords int64 `json:"beyond_records"`
	// Erasures are the erasure requests of the sender carried out here
	// since the time asked about, as kept (policy.ErasureRequest as JSON,
	// without the subject's id in clear).
	Erasures [][]byte `json:"erasures,omitempty"`
}

// SenderState reads what this node holds from sender: which of the
// envelopes ids it stores, how many it stores with sequence numbers above
// known, and the erasure requests sender made that were carried out since.
func (r *Receiver) SenderState(ctx context.Context, sender string, ids []string, known int64, since time.Time) (SenderState, error) {
	var s SenderState
	err := r.db.R.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0),
			count(CASE WHEN seq > ?2 THEN 1 END), coalesce(sum(CASE WHEN seq > ?2 THEN records END), 0)
		FROM inbox WHERE sender = ?1`, sender, known).Scan(&s.Last, &s.Beyond, &s.BeyondRecords)
	if err != nil {
		return s, fmt.Errorf("read inbox: %w", err)
	}
	if len(ids) > 0 {
		asked, err := json.Marshal(ids)
		if err != nil {
			return s, err
		}
		if s.Held, err = store.Strings(ctx, r.db.R, `SELECT envelope_id FROM inbox
			WHERE sender = ? AND envelope_id IN (SELECT value FROM json_each(?))`, sender, string(asked)); err != nil {
			return s, fmt.Errorf("read inbox: %w", err)
		}
	}
	rows, err := r.db.R.QueryContext(ctx, `SELECT request, body FROM erased WHERE provider = ? AND done_ms >= ? ORDER BY done_ms`,
		sender, since.UnixMilli())
	if err != nil {
		return s, fmt.Errorf("read erasures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return s, fmt.Errorf("read erasures: %w", err)
		}
		plain, err := r.dk.Open(nil, body, erasedAAD(id))
		if err != nil {
			return s, fmt.Errorf("read erasure request %s: %w", id, err)
		}
		s.Erasures = append(s.Erasures, plain)
	}
	return s, rows.Err()
}

// SeqIn is the highest sequence number of records envelopes stored from
// peer (0: none).
func (r *Receiver) SeqIn(ctx context.Context, peer string) (int64, error) {
	var last int64
	if err := r.db.R.QueryRowContext(ctx, `SELECT coalesce(max(last), 0) FROM seq_in WHERE peer = ? AND kind = ?`,
		peer, crypto.KindRecords).Scan(&last); err != nil {
		return 0, fmt.Errorf("read sequence: %w", err)
	}
	return last, nil
}

// Peers are the nodes this node has stored envelopes of records from.
func (r *Receiver) Peers(ctx context.Context) ([]string, error) {
	return store.Strings(ctx, r.db.R, `SELECT DISTINCT peer FROM seq_in ORDER BY peer`)
}

// RememberSent keeps, for sender, restored from an older copy of its
// database, a keyed hash of every record this node holds from it: its
// copy may not know it sent them, and one that arrives again from sender
// under the same agreement within RecoveredFor is dropped (dropRecovered).
// All of them, not only those above the sequence numbers the copy knows: a
// copy that shared before it was found out
// (TestFaultsRestoreFoundByReplay) knows numbers its peers refused. It
// returns how many records it keeps hashes of.
func (r *Receiver) RememberSent(ctx context.Context, sender string) (int, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT i.envelope_id, i.agreement, r.body FROM inbox i JOIN received r ON r.envelope_id = i.envelope_id
		WHERE i.sender = ?`, sender)
	if err != nil {
		return 0, fmt.Errorf("read inbox: %w", err)
	}
	type digest struct {
		agreement string
		sum       [16]byte
	}
	var sums []digest
	for rows.Next() {
		var eid, agreement string
		var body []byte
		if err := rows.Scan(&eid, &agreement, &body); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read inbox: %w", err)
		}
		plain, err := r.storedRecords(eid, body)
		if err != nil {
			rows.Close()
			return 0, err
		}
		for line := range bytes.Lines(plain) {
			sums = append(sums, digest{agreement, r.recordSum(agreement, line)})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read inbox: %w", err)
	}
	now := r.now().UnixMilli()
	err = r.db.Write(ctx, func(tx *sql.Tx) error {
		for _, d := range sums {
			if _, err := r.db.Exec(ctx, tx, qRemember, sender, d.agreement, d.sum[:], now); err != nil {
				return fmt.Errorf("keep record hashes: %w", err)
			}
		}
		return nil
	})
	return len(sums), err
}

// qRemember keeps one record's hash for RememberSent.
var qRemember = store.NewQuery(`INSERT INTO recovered(sender, agreement, digest, added_ms) VALUES (?, ?, ?, ?)
	ON CONFLICT DO UPDATE SET added_ms = excluded.added_ms`)

// storedRecords is the NDJSON of a received body as stored.
func (r *Receiver) storedRecords(eid string, body []byte) ([]byte, error) {
	body, err := r.dk.Open(nil, body, receivedAAD(eid))
	if err != nil {
		return nil, fmt.Errorf("read records of envelope %s: %w", eid, err)
	}
	plain, err := envelope.RecordsPlain(body, envelope.MaxRecordsPlain)
	if err != nil {
		return nil, fmt.Errorf("read records of envelope %s: %w", eid, err)
	}
	return plain, nil
}

// recordSum is the keyed hash of one record line as it arrived under
// agreement (its newline left out).
func (r *Receiver) recordSum(agreement string, line []byte) [16]byte {
	return r.ev.SubjectSum("record\x00" + agreement + "\x00" + string(bytes.TrimSuffix(line, []byte("\n"))))
}

// dropRecovered is body (of kept records) without the records its sender,
// restored from an older copy, sent before under the same agreement
// (RememberSent), and how many that leaves; what it drops gets an entry
// of its own.
func (r *Receiver) dropRecovered(ctx context.Context, tx *sql.Tx, p *prepared, body []byte, kept int) ([]byte, int, error) {
	h := p.h
	var n int
	if err := r.db.QueryRow(ctx, tx, qRecovered, h.Sender, h.Agreement).Scan(&n); err != nil {
		return nil, 0, fmt.Errorf("check records sent before a restore: %w", err)
	}
	if n == 0 {
		return body, kept, nil
	}
	plain, err := envelope.RecordsPlain(body, envelope.MaxRecordsPlain)
	if err != nil {
		return nil, 0, fmt.Errorf("read records of envelope %s: %w", h.IDString(), err)
	}
	var out []byte
	k, gone := 0, 0
	for line := range bytes.Lines(plain) {
		sum := r.recordSum(h.Agreement, line)
		var held int
		if err := r.db.QueryRow(ctx, tx, qRecoveredRecord, h.Sender, h.Agreement, sum[:]).Scan(&held); err != nil {
			return nil, 0, fmt.Errorf("check records sent before a restore: %w", err)
		}
		if held > 0 {
			gone++
			continue
		}
		out = append(out, line...)
		k++
	}
	if gone == 0 {
		return body, kept, nil
	}
	if err := r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDrop, Peer: h.Sender, Agreement: h.Agreement,
		Purpose: h.Purpose, Envelope: h.IDString(), Reason: "held_before_restore", Count: gone}); err != nil {
		return nil, 0, err
	}
	if out == nil {
		out = []byte{}
	}
	return envelope.CompressRecords(out, uint32(k)), k, nil
}

// RecoveredFor is how long the hashes RememberSent keeps are kept: a
// restored provider's operator shares again what its copy lost within
// days of the recovery; afterwards the same record shared again (a consent
// granted anew after an erasure, a record past its retention) is stored.
const RecoveredFor = 7 * 24 * time.Hour

// forgetRecovered deletes the hashes older than RecoveredFor.
func (r *Receiver) forgetRecovered(ctx context.Context) error {
	return r.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, qForgetRecovered, r.now().Add(-RecoveredFor).UnixMilli())
		return err
	})
}

// qForgetRecovered is forgetRecovered's deletion: through the index
// recovered_added, not a walk of every hash kept, on each janitor pass.
const qForgetRecovered = `DELETE FROM recovered WHERE added_ms < ?`

// AwaitAgreements notes, inside tx, the agreements in force that peer
// holds with this node and this node's restored copy lost: until until,
// what peer sends under one waits for it to be installed again (retried,
// not refused).
func (r *Receiver) AwaitAgreements(ctx context.Context, tx *sql.Tx, peer string, ids []string, until time.Time) error {
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `INSERT INTO awaited_agreements(peer, agreement, until_ms) VALUES (?, ?, ?)
			ON CONFLICT DO UPDATE SET until_ms = excluded.until_ms`, peer, id, until.UnixMilli()); err != nil {
			return fmt.Errorf("note an agreement to install again: %w", err)
		}
	}
	return nil
}

const qAwaited = `SELECT count(*) FROM awaited_agreements WHERE peer = ? AND agreement = ? AND until_ms > ?`

// awaited reports whether agreement with sender is one this node's
// restored copy lost and waits for (AwaitAgreements).
func (r *Receiver) awaited(ctx context.Context, sender, agreement string) bool {
	var n int
	err := r.db.R.QueryRowContext(ctx, qAwaited, sender, agreement, r.now().UnixMilli()).Scan(&n)
	return err == nil && n > 0
}

// awaitedTx is awaited as the write transaction tx sees it: a recovery
// that committed after a delivery was checked, and before its refusal is
// recorded, turns the refusal into a wait.
func (r *Receiver) awaitedTx(ctx context.Context, tx *sql.Tx, sender, agreement string) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, qAwaited, sender, agreement, r.now().UnixMilli()).Scan(&n); err != nil {
		return false, fmt.Errorf("awaited agreements: %w", err)
	}
	return n > 0, nil
}
