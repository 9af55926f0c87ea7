package share

import (
	"context"
	"fmt"
)

// HeldOfType is how many records of recordType the node holds (the
// catalogue's row counts, before their noise).
func (n *Sharer) HeldOfType(ctx context.Context, recordType string) (int64, error) {
	var k int64
	if err := n.db.R.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE type = ?`, recordType).Scan(&k); err != nil {
		return 0, fmt.Errorf("count records of %s: %w", recordType, err)
	}
	return k, nil
}
