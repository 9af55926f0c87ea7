package share

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/store"
)

// A held record at rest: its body and classification sealed under the
// node's data key, bound to the record's key (the additional data), and
// its subject a keyed hash (the evidence log's), never the student
// number. The records table thus holds no personal value in clear.

func bodyAAD(key []byte) []byte   { return append([]byte("eduspace records.body\x00"), key...) }
func labelsAAD(key []byte) []byte { return append([]byte("eduspace records.labels\x00"), key...) }

// sealHeld is a held record's body and labels as stored (labels nil for a
// record held from before labels were stored).
func (n *Sharer) sealHeld(key, body, labels []byte) ([]byte, []byte) {
	if labels != nil {
		labels = n.dk.SealIf(labels, labelsAAD(key))
	}
	return n.dk.SealIf(body, bodyAAD(key)), labels
}

// openHeld is a held record's body and labels as they were classified,
// whether stored sealed or in clear.
func (n *Sharer) openHeld(key, body, labels []byte) ([]byte, []byte, error) {
	b, err := n.dk.Open(nil, body, bodyAAD(key))
	if err != nil {
		return nil, nil, fmt.Errorf("body: %w", err)
	}
	var l []byte
	if labels != nil {
		if l, err = n.dk.Open(nil, labels, labelsAAD(key)); err != nil {
			return nil, nil, fmt.Errorf("classification: %w", err)
		}
	}
	return b, l, nil
}

// subjectColumn is what the records table keeps of a subject: its keyed
// hash, enough to tell one person's records from another's.
func (n *Sharer) subjectColumn(subject string) string {
	if subject == "" {
		return ""
	}
	return n.ev.Subject(subject)
}

// SealHeld seals under the current data key, a page at a time, the held
// records stored in clear (by a node with storage.encrypt off, or before
// it sealed records) or under a data key being retired (after a
// rotation), and replaces subjects in clear by keyed hashes. The node
// runs it in the background at start and after a rotation; a record is
// read the same either way meanwhile. progress, when set, is told each
// page's count; it returns how many records it sealed.
func (n *Sharer) SealHeld(ctx context.Context, progress func(int)) (int, error) {
	if n.dk == nil {
		return 0, nil
	}
	type row struct {
		id                int64
		key, body, labels []byte
		subject           string
	}
	k, err := store.RewritePages(ctx, n.db, `SELECT id, key, subject, body, labels FROM records
		WHERE id > ? AND `+heldNotCurrent(n.dk)+` ORDER BY id LIMIT 500`, int64(0), func(r row) any { return r.id },
		func(rows *sql.Rows) (r row, err error) {
			return r, rows.Scan(&r.id, &r.key, &r.subject, &r.body, &r.labels)
		},
		func(tx *sql.Tx, r row) error {
			plain, labels, err := n.openHeld(r.key, r.body, r.labels)
			if err != nil {
				return fmt.Errorf("record %d: %w", r.id, err)
			}
			body, labels := n.sealHeld(r.key, plain, labels)
			// A subject stored in clear is hashed; one already hashed (32
			// hex digits) stays.
			subject := r.subject
			if !isSubjectHash(subject) {
				subject = n.subjectColumn(subject)
			}
			_, err = tx.ExecContext(ctx, `UPDATE records SET body = ?, labels = ?, subject = ? WHERE id = ? AND body = ?`,
				body, labels, subject, r.id, r.body)
			return err
		}, progress)
	if err != nil {
		return k, fmt.Errorf("seal held records: %w", err)
	}
	return k, nil
}

// heldNotCurrent selects the held records whose body or classification
// is not sealed under dk's current key. The two are sealed one after the
// other, so a rotation may fall between them.
func heldNotCurrent(dk *keys.DataKey) string {
	return "(" + dk.NotCurrentSQL("body") + " OR labels IS NOT NULL AND " + dk.NotCurrentSQL("labels") + ")"
}

// UnsealedHeld counts the held records SealHeld has yet to seal.
func (n *Sharer) UnsealedHeld(ctx context.Context) (int, error) {
	if n.dk == nil {
		return 0, nil
	}
	var k int
	if err := n.db.R.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE `+heldNotCurrent(n.dk)).Scan(&k); err != nil {
		return 0, fmt.Errorf("count held records to seal: %w", err)
	}
	return k, nil
}

// isSubjectHash reports whether s has the form of a keyed subject hash.
func isSubjectHash(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// OpenBody is a held record's body as the records table stores it under
// key, opened with the node's data key when it is sealed: for tools and
// tests that read a node's database directly.
func OpenBody(dk *keys.DataKey, key, body []byte) ([]byte, error) {
	return dk.Open(nil, body, bodyAAD(key))
}
