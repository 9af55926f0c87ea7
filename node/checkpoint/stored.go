package checkpoint

import (
	"context"
	"database/sql"
	"fmt"
	"io"

	"github.com/eduspace/eduspace/node/evidence"
)

// Queryer is a *sql.DB or a *sql.Tx.
type Queryer interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// ReadSigned reads node's checkpoints from a node database's checkpoints
// table (a live node's or a copy), in count order. It verifies nothing.
// A copy older than the tsa_token column (opened read-only, unmigrated)
// reads as unanchored.
func ReadSigned(ctx context.Context, q Queryer, node string) ([]evidence.Signed, error) {
	token := "tsa_token"
	if ok, err := hasColumn(ctx, q, "checkpoints", "tsa_token"); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	} else if !ok {
		token = "NULL"
	}
	rows, err := q.QueryContext(ctx, `SELECT node, count, head, time_ms, data, credential, `+token+` FROM checkpoints WHERE node = ? ORDER BY count`, node)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []evidence.Signed
	for rows.Next() {
		var s evidence.Signed
		if err := rows.Scan(&s.Node, &s.Count, &s.Head, &s.TimeMS, &s.Data, &s.Credential, &s.TSAToken); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

// Export writes node's evidence log and its checkpoints from db to w
// (evidence.Export, node/evidence/EXPORT.md).
func Export(ctx context.Context, db *sql.DB, node string, w io.Writer) error {
	return evidence.Export(ctx, db, node, func(ctx context.Context, tx *sql.Tx, node string) ([]evidence.Signed, error) {
		return ReadSigned(ctx, tx, node)
	}, w)
}

func hasColumn(ctx context.Context, q Queryer, table, column string) (bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT 1 FROM pragma_table_info(?) WHERE name = ?`, table, column)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	ok := rows.Next()
	return ok, rows.Err()
}
