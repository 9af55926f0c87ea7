package node

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// BackupManifest describes a backup of a node's database: what it holds,
// read from the copy itself, so that an operator (and a restored node)
// can tell how far it reaches.
type BackupManifest struct {
	Version  int       `json:"version"`
	Node     string    `json:"node"`
	Space    string    `json:"space"`
	Taken    time.Time `json:"taken"`
	Database string    `json:"database"` // the copy's file name, beside the manifest
	Bytes    int64     `json:"bytes"`
	// Schema is the copy's schema version (store migrations).
	Schema int `json:"schema"`
	// Evidence is the copy's evidence log, its chain verified.
	Evidence struct {
		Count int64  `json:"count"`
		Head  string `json:"head"` // hex
	} `json:"evidence"`
	// OwnCheckpoint is how many entries the node's newest checkpoint in the
	// copy covers.
	OwnCheckpoint int64 `json:"own_checkpoint"`
	// SeqOut is, per peer and envelope kind, the next sequence number the
	// node would send; SeqIn the highest it received.
	SeqOut []PeerSeq `json:"seq_out"`
	SeqIn  []PeerSeq `json:"seq_in"`
	// Records held, and received from peers.
	Records  int64 `json:"records"`
	Received int64 `json:"received"`
}

// PeerSeq is a sequence number of one peer and envelope kind.
type PeerSeq struct {
	Peer string `json:"peer"`
	Kind int    `json:"kind"`
	Seq  int64  `json:"seq"`
}

// ManifestSuffix names a backup's manifest: the backup file's name with it.
const ManifestSuffix = ".manifest.json"

// Backup writes an online, consistent copy of the node's database to out
// (store.Backup), verifies the copy's evidence chain, and writes its
// manifest beside it (out + ManifestSuffix). The node may be running. The
// keys, credential and admin token are not in the database: keep a copy of
// data_dir/keys, credential.jwt and admin.token with it (deploy/README.md,
// Backup and restore).
func Backup(ctx context.Context, cfg Config, out string, now time.Time) (BackupManifest, error) {
	var m BackupManifest
	partial := out + ".partial"
	os.Remove(partial)
	if _, err := os.Stat(out); err == nil {
		return m, fmt.Errorf("backup: %s exists: choose a new file", out)
	}
	if dir := filepath.Dir(out); !isDir(dir) {
		return m, fmt.Errorf("backup: %s is not a directory: create it first (install -d -m 0700 %s)", dir, dir)
	}
	if err := store.Backup(ctx, filepath.Join(cfg.DataDir, "node.db"), partial); err != nil {
		return m, err
	}
	defer os.Remove(partial)
	m, err := readManifest(ctx, partial, cfg, now)
	if err != nil {
		return m, err
	}
	f, err := os.Open(partial)
	if err != nil {
		return m, err
	}
	// The copy reaches the disk before it takes its name.
	err = f.Sync()
	f.Close()
	if err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(partial, out); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	m.Database = filepath.Base(out)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	if err := crypto.WriteFileBytes(out+ManifestSuffix, append(data, '\n'), 0o600); err != nil {
		return m, fmt.Errorf("backup: write manifest: %w", err)
	}
	return m, nil
}

// readManifest reads the manifest of the database copy at path.
func readManifest(ctx context.Context, path string, cfg Config, now time.Time) (BackupManifest, error) {
	m := BackupManifest{Version: 1, Node: cfg.NodeID, Space: cfg.Space, Taken: now.UTC()}
	fi, err := os.Stat(path)
	if err != nil {
		return m, err
	}
	m.Bytes = fi.Size()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return m, fmt.Errorf("backup: read the copy: %w", err)
	}
	defer db.Close()
	head, err := evidence.Verify(ctx, db)
	if err != nil {
		return m, fmt.Errorf("backup: the copy's evidence log: %w", err)
	}
	m.Evidence.Count, m.Evidence.Head = head.Count, hex.EncodeToString(head.Hash)
	var own sql.NullInt64
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&m.Schema); err != nil {
		return m, fmt.Errorf("backup: read the copy: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT max(count) FROM checkpoints WHERE node = ?`, cfg.NodeID).Scan(&own); err != nil {
		return m, fmt.Errorf("backup: read the copy: %w", err)
	}
	m.OwnCheckpoint = own.Int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM records), (SELECT coalesce(sum(records), 0) FROM received)`).
		Scan(&m.Records, &m.Received); err != nil {
		return m, fmt.Errorf("backup: read the copy: %w", err)
	}
	for _, t := range []struct {
		query string
		dst   *[]PeerSeq
	}{
		{`SELECT peer, kind, next FROM seq_out ORDER BY peer, kind`, &m.SeqOut},
		{`SELECT peer, kind, last FROM seq_in ORDER BY peer, kind`, &m.SeqIn},
	} {
		rows, err := db.QueryContext(ctx, t.query)
		if err != nil {
			return m, fmt.Errorf("backup: read the copy: %w", err)
		}
		for rows.Next() {
			var p PeerSeq
			if err := rows.Scan(&p.Peer, &p.Kind, &p.Seq); err != nil {
				rows.Close()
				return m, fmt.Errorf("backup: read the copy: %w", err)
			}
			*t.dst = append(*t.dst, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return m, fmt.Errorf("backup: read the copy: %w", err)
		}
	}
	return m, nil
}

// isDir reports whether path is a directory.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
