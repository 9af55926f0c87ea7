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
