package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkEnvelopeWrites writes what the pipeline of `eduspace bench`
// writes per group of 16 envelopes of 500 records, and reports the
// process's CPU time per envelope (user and system, so the kernel's share
// of the writes, the checkpoints and their fsyncs counts), up to and
// including Close, which checkpoints what is left: work that a slower
// checkpointer leaves for later is counted too.
//
//   - sender: one transaction with, per envelope, the sequence upsert, the
//     outbox row, the sealed envelope (72 KiB, incompressible), the
//     delivered row (40 KiB of JSON) and two evidence entries of 18 KiB; then
//     the relay's reads and its attempt and sent marks, and the receipts.
//   - receiver: one transaction with, per envelope, the duplicate check, the
//     inbox row, the payload (72 KiB), the sequence upsert and an evidence
//     entry.
func BenchmarkEnvelopeWrites(b *testing.B) {
	for _, side := range []string{"sender", "receiver"} {
		b.Run(side, func(b *testing.B) {
			ctx := context.Background()
			db, err := Open(ctx, filepath.Join(b.TempDir(), "node.db"))
			if err != nil {
				b.Fatal(err)
			}
			w := newEnvelopeWriter()
			const group = 16
			before := cpuTime(b)
			start := time.Now()
			b.ResetTimer()
			for range b.N {
				var err error
				if side == "sender" {
					err = w.sender(ctx, db, group)
				} else {
					err = w.receiver(ctx, db, group)
				}
				if err != nil {
					db.Close()
					b.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu := cpuTime(b) - before
			envelopes := float64(b.N * group)
			b.ReportMetric(float64(cpu.Microseconds())/envelopes, "cpu-µs/envelope")
			b.ReportMetric(envelopes/time.Since(start).Seconds(), "envelopes/s")
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type envelopeWriter struct {
	blobs    [][]byte // sealed envelopes / payloads
	fields   string
	items    string
	evidence []byte
	n        int
}

func newEnvelopeWriter() *envelopeWriter {
	r := rand.New(rand.NewPCG(1, 2))
	w := &envelopeWriter{fields: `["a,b,c","a,b"]`}
	for range 8 {
		blob := make([]byte, 72<<10)
		for i := range blob {
			blob[i] = byte(r.Uint32())
		}
		w.blobs = append(w.blobs, blob)
	}
	var items strings.Builder
	items.WriteByte('[')
	h := make([]byte, 16)
	for i := range 500 {
		if i > 0 {
			items.WriteByte(',')
		}
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		fmt.Fprintf(&items, `["%s","L%d",%d]`, hex.EncodeToString(h), 1+i%3, i%2)
	}
	items.WriteByte(']')
	w.items = items.String()
	w.evidence = []byte(w.items[:18<<10])
	return w
}

func (w *envelopeWriter) sender(ctx context.Context, db *DB, group int) error {
	first := w.n
	err := db.Write(ctx, func(tx *sql.Tx) error {
		for range group {
			w.n++
			if _, err := tx.ExecContext(ctx, `INSERT INTO seq_out(peer, kind, next) VALUES ('uni-b', 1, ?)
				ON CONFLICT(peer, kind) DO UPDATE SET next = excluded.next`, w.n+1); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO outbox(envelope_id, recipient, kind, subject, seq, records, created_ms, agreement, purpose, record_type)
				VALUES (?, 'uni-b', 1, 'eds.s.deliver.uni-b.uni-a', ?, 500, ?, 'ag-1', 'research', 'student')`,
				fmt.Sprintf("env-%08d", w.n), w.n, time.Now().UnixMilli())
			if err != nil {
				return err
			}
			id, _ := res.LastInsertId()
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_data(id, data) VALUES (?, ?)`, id, w.blobs[w.n%len(w.blobs)]); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO delivered(envelope_id, fields, items) VALUES (?, ?, ?)`,
				fmt.Sprintf("env-%08d", w.n), w.fields, w.items); err != nil {
				return err
			}
			for range 2 {
				if err := w.appendEvidence(ctx, tx, w.evidence); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The relay: read the page, mark it attempted, then sent.
	rows, err := db.R.QueryContext(ctx, `SELECT o.id, o.envelope_id FROM outbox o JOIN outbox_data d ON d.id = o.id
		WHERE o.sent_ms IS NULL ORDER BY o.id LIMIT 64`)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, col := range []string{"attempt_ms", "sent_ms"} {
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			for i := first + 1; i <= w.n; i++ {
				if _, err := tx.ExecContext(ctx, `UPDATE outbox SET `+col+` = ? WHERE envelope_id = ?`, time.Now().UnixMilli(), fmt.Sprintf("env-%08d", i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	// The receipts.
	return db.Write(ctx, func(tx *sql.Tx) error {
		for i := first + 1; i <= w.n; i++ {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET receipt_ms = ? WHERE envelope_id = ?`, time.Now().UnixMilli(), fmt.Sprintf("env-%08d", i)); err != nil {
				return err
			}
			if err := w.appendEvidence(ctx, tx, w.evidence[:300]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *envelopeWriter) receiver(ctx context.Context, db *DB, group int) error {
	return db.Write(ctx, func(tx *sql.Tx) error {
		for range group {
			w.n++
			eid := fmt.Sprintf("env-%08d", w.n)
			var seen int
			if err := db.R.QueryRowContext(ctx, `SELECT count(*) FROM inbox WHERE envelope_id = ?`, eid).Scan(&seen); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO inbox(envelope_id, sender, seq, agreement, purpose, record_type, records, created_ms, received_ms)
				VALUES (?, 'uni-a', ?, 'ag-1', 'research', 'student', 500, ?, ?)`, eid, w.n, time.Now().UnixMilli(), time.Now().UnixMilli()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO received(envelope_id, type, records, body) VALUES (?, 'student', 500, ?)`, eid, w.blobs[w.n%len(w.blobs)]); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO seq_in(peer, kind, last) VALUES ('uni-a', 1, ?)
				ON CONFLICT(peer, kind) DO UPDATE SET last = max(last, excluded.last)`, w.n); err != nil {
				return err
			}
			if err := w.appendEvidence(ctx, tx, w.evidence); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *envelopeWriter) appendEvidence(ctx context.Context, tx *sql.Tx, entry []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO evidence(seq, entry, prev_hash, hash)
		VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM evidence), ?, zeroblob(32), zeroblob(32))`, entry)
	return err
}
