package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDataKey: a value sealed opens only under the same key and the same
// additional data; a value in clear reads as it is; the key file is
// created once, 0600, and read back.
func TestDataKey(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadDataKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, dataKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := LoadDataKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"name":"张三","student_id":"2024001"}`)
	sealed := k.Seal(nil, plain, []byte("row 1"))
	if bytes.Contains(sealed, []byte("2024001")) || !IsSealed(sealed) {
		t.Fatalf("sealed value %x shows its plaintext or lacks the mark", sealed)
	}
	if got, err := again.Open(nil, sealed, []byte("row 1")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open with the key read back: %q, %v", got, err)
	}
	if _, err := k.Open(nil, sealed, []byte("row 2")); !errors.Is(err, ErrNotOpened) {
		t.Errorf("opened under another row's additional data: %v", err)
	}
	other, _ := NewDataKey(bytes.Repeat([]byte{7}, 32))
	if _, err := other.Open(nil, sealed, []byte("row 1")); !errors.Is(err, ErrNotOpened) {
		t.Errorf("opened under another key: %v", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open(nil, bad, []byte("row 1")); !errors.Is(err, ErrNotOpened) {
		t.Errorf("opened an altered value: %v", err)
	}
	if got, err := k.Open(nil, plain, nil); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("a value in clear: %q, %v", got, err)
	}
	var none *DataKey
	if got := none.SealIf(plain, nil); !bytes.Equal(got, plain) {
		t.Errorf("no key (storage.encrypt off) sealed %q", got)
	}
	if _, err := none.Open(nil, sealed, []byte("row 1")); !errors.Is(err, ErrNotOpened) {
		t.Errorf("a sealed value without a key: %v", err)
	}
}

// BenchmarkDataKeySeal is the cost of sealing one held record's body at
// rest (about 600 bytes).
func BenchmarkDataKeySeal(b *testing.B) {
	k, _ := NewDataKey(bytes.Repeat([]byte{1}, 32))
	plain := bytes.Repeat([]byte("x"), 600)
	aad := []byte("eduspace records.body\x00" + "0123456789abcdef0123456789abcdef")
	var dst []byte
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		dst = k.Seal(dst[:0], plain, aad)
	}
}

// BenchmarkDataKeyOpen is the cost of opening it again at a share.
func BenchmarkDataKeyOpen(b *testing.B) {
	k, _ := NewDataKey(bytes.Repeat([]byte{1}, 32))
	aad := []byte("eduspace records.body\x00" + "0123456789abcdef0123456789abcdef")
	sealed := k.Seal(nil, bytes.Repeat([]byte("x"), 600), aad)
	var dst []byte
	b.SetBytes(int64(len(sealed)))
	for b.Loop() {
		dst, _ = k.Open(dst[:0], sealed, aad)
	}
}

// TestDataKeyRotate: after a rotation new values are sealed under the new
// key while the old one still opens what it sealed, both from memory and
// from the files read back (a restart mid-rotation); a retired key opens
// nothing and its file is gone; a rotation stopped between its two file
// writes leaves the old key current and no copy behind.
func TestDataKeyRotate(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadDataKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	oldID := k.ID()
	aad := []byte("row 1")
	before := k.Seal(nil, []byte("sealed before"), aad)

	// Stopped after keeping the current key aside, before the new one was
	// written: the copy is the current key, and a load removes it.
	old, err := os.ReadFile(filepath.Join(dir, dataKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, retiringFile(oldID))
	if err := os.WriteFile(leftover, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if k2, err := LoadDataKey(dir); err != nil || k2.ID() != oldID || len(k2.Retiring()) != 0 {
		t.Fatalf("load after a rotation stopped half-way: %v; want key %s current and none retiring", err, oldID)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the leftover copy of the current key is still there: %v", err)
	}

	newID, err := k.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if newID == oldID || k.ID() != newID || len(k.Retiring()) != 1 || k.Retiring()[0] != oldID {
		t.Fatalf("after rotation: current %s, retiring %v; want %s current, %s retiring", k.ID(), k.Retiring(), newID, oldID)
	}
	after := k.Seal(nil, []byte("sealed after"), aad)
	if !bytes.HasPrefix(after, k.SealedPrefix()) || bytes.HasPrefix(before, k.SealedPrefix()) {
		t.Fatalf("sealed prefixes: before %x, after %x, current %x", before[:6], after[:6], k.SealedPrefix())
	}
	for _, kk := range []*DataKey{k, reload(t, dir)} {
		for _, v := range [][]byte{before, after} {
			if _, err := kk.Open(nil, v, aad); err != nil {
				t.Fatalf("open %x… during the rotation: %v", v[:6], err)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, retiringFile(oldID)))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the retiring key's file: %v, %v; want mode 0600", fi, err)
	}
	if err := k.Retire(newID); err == nil {
		t.Fatal("retired the current key")
	}
	if err := k.Retire(oldID); err != nil {
		t.Fatal(err)
	}
	for _, kk := range []*DataKey{k, reload(t, dir)} {
		if _, err := kk.Open(nil, before, aad); !errors.Is(err, ErrNotOpened) {
			t.Errorf("a value sealed under the retired key: %v; want ErrNotOpened", err)
		}
		if got, err := kk.Open(nil, after, aad); err != nil || string(got) != "sealed after" {
			t.Errorf("a value sealed under the current key: %q, %v", got, err)
		}
		if len(kk.Retiring()) != 0 {
			t.Errorf("still retiring %v", kk.Retiring())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, retiringFile(oldID))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the retired key's file is still there: %v", err)
	}
	// A backup made before the rotation is restored with its key put
	// beside the current one, under any name of the form.
	restored := filepath.Join(dir, "keys", "data.key.from-backup.pem")
	if err := os.WriteFile(restored, old, 0o600); err != nil {
		t.Fatal(err)
	}
	k = reload(t, dir)
	if r := k.Retiring(); len(r) != 1 || r[0] != oldID {
		t.Fatalf("a restored key put beside the current one: retiring %v, want [%s]", r, oldID)
	}
	if got, err := k.Open(nil, before, aad); err != nil || string(got) != "sealed before" {
		t.Fatalf("a value of the backup under its restored key: %q, %v", got, err)
	}
	if err := k.Retire(oldID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(restored); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the restored key's file is still there once retired: %v", err)
	}
	mem, _ := NewDataKey(bytes.Repeat([]byte{7}, 32))
	if _, err := mem.Rotate(); !errors.Is(err, ErrNoKeyFile) {
		t.Errorf("rotated a key kept in no file: %v", err)
	}
}

func reload(t *testing.T, dir string) *DataKey {
	t.Helper()
	k, err := LoadDataKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
