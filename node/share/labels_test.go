package share

import (
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// TestStoredLabels: a held record is decided on the classification stored
// at ingest, unless it was a minor's (classified again at the time of the
// share: a minor comes of age), another standard made it, or there is none.
func TestStoredLabels(t *testing.T) {
	std := schema.Default()
	n := &Sharer{std: std, log: slog.New(slog.DiscardHandler)}
	ingest := time.Date(2020, 9, 1, 0, 0, 0, 0, time.UTC)
	share := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	// Born 2010-03-01: a minor (under 14) at ingest, an adult at the share.
	rec := schema.Record{Type: "student", Fields: map[string]any{"student_id": "20240001", "name": "张三",
		"birth_date": "2010-03-01"}}
	atIngest, err := std.Classify(rec, ingest)
	if err != nil || !slices.Contains(atIngest.Flags, "minor") {
		t.Fatalf("at ingest: %v, %v; want a minor", atIngest.Flags, err)
	}
	got, err := n.labels(rowOf(t, std, rec), std.AppendLabels(nil, atIngest), share)
	if err != nil || slices.Contains(got.Flags, "minor") {
		t.Errorf("a minor's stored labels at the share: flags %v, %v; want classified again, an adult", got.Flags, err)
	}

	// An adult's stored labels are used as they are, whatever the record
	// holds now: here a body the stored classification never saw.
	adult := schema.Record{Type: "student", Fields: map[string]any{"student_id": "20240002", "name": "李四",
		"birth_date": "1990-01-01"}}
	stored, err := std.Classify(adult, ingest)
	if err != nil {
		t.Fatal(err)
	}
	changed := schema.Record{Type: "student", Fields: map[string]any{"student_id": "20240002", "name": "李四",
		"birth_date": "1990-01-01", "religion": "x"}}
	got, err = n.labels(rowOf(t, std, changed), std.AppendLabels(nil, stored), share)
	if err != nil || got.Level != stored.Level || got.NumFields() != stored.NumFields() {
		t.Errorf("an adult's stored labels: level %v, %d fields, %v; want the stored %v, %d fields",
			got.Level, got.NumFields(), err, stored.Level, stored.NumFields())
	}

	// None stored, or unreadable: classified at the share.
	for _, data := range [][]byte{nil, {9, 9}} {
		got, err = n.labels(rowOf(t, std, changed), data, share)
		want, _ := std.Classify(changed, share)
		if err != nil || got.Level != want.Level || got.NumFields() != want.NumFields() {
			t.Errorf("stored %v: level %v, %d fields, %v; want classified: %v, %d", data, got.Level, got.NumFields(), err,
				want.Level, want.NumFields())
		}
	}
}

// rowOf is rec as a share reads it from the records table: a row.
func rowOf(t *testing.T, std *schema.Standard, rec schema.Record) *schema.Row {
	t.Helper()
	body, err := json.Marshal(rec.Fields)
	if err != nil {
		t.Fatal(err)
	}
	row := new(schema.Row)
	if verr := schema.NewLineParser(rec.Type).ParseRow(body, std, row); verr != nil {
		t.Fatal(verr)
	}
	return row
}
