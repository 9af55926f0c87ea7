package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackupNamesAMissingDirectory: a backup into a directory that does
// not exist is refused before anything is copied, naming the directory
// and how to make it (not SQLite's "unable to open database" about a
// partial file).
func TestBackupNamesAMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "backups")
	out := filepath.Join(missing, "node.db")
	_, err := Backup(context.Background(), Config{NodeID: "uni-a", DataDir: dir}, out, time.Now())
	if err == nil || !strings.Contains(err.Error(), missing+" is not a directory") || !strings.Contains(err.Error(), "install -d") {
		t.Fatalf("backup into a missing directory: %v; want the directory named and how to create it", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("the backup created %s: %v", missing, err)
	}
}
