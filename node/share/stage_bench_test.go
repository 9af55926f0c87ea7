package share

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// The node's per-record stages, each as its own benchmark (records/s), so
// that a regression shows where it is. Crypto per record: crypto's
// BenchmarkSealOpen; classification alone: schema's BenchmarkClassifyStudent;
// the whole pipeline: node/bench's BenchmarkPipeline.

func benchRecords(b *testing.B, n int) []schema.Record {
	data, _ := synth.Students(n, 9)
	rd := schema.NewNDJSONReader(bytes.NewReader(data), "")
	out := make([]schema.Record, 0, n)
	for range n {
		rec, _, err := rd.Next()
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// BenchmarkSenderStage: classify, decide and encode one held record for
// the wire (Share's path, records decoded into maps).
func BenchmarkSenderStage(b *testing.B) {
	recs := benchRecords(b, 1000)
	std, rb := schema.Default(), policy.DefaultRulebook()
	now := time.Now()
	a := benchAgreement(now)
	tz := crypto.NewTokenizer(crypto.TokenKey([]byte("secret"), "receiver"))
	var buf []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rec := recs[i%len(recs)]
		i++
		l, err := std.Classify(rec, now)
		if err != nil {
			b.Fatal(err)
		}
		d := policy.Decide(rb, policy.Input{Provider: "sender", Recipient: "receiver", RecipientRole: "university",
			Labels: l, Agreement: a, Now: now})
		if !d.Permit {
			b.Fatalf("denied: %s", d.Reason)
		}
		buf = policy.AppendRecord(buf[:0], rec, d, tz)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSenderLine: parse an NDJSON line into a row, classify, decide
// and encode it for the wire (Send's path, which eduspace bench measures).
func BenchmarkSenderLine(b *testing.B) {
	data, _ := synth.Students(1000, 9)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	std, rb := schema.Default(), policy.DefaultRulebook()
	now := time.Now()
	a := benchAgreement(now)
	a.RecordTypes["student"] = slices.Sorted(slices.Values(a.RecordTypes["student"])) // as newShareRun does
	tz := crypto.NewTokenizer(crypto.TokenKey([]byte("secret"), "receiver"))
	p, row := schema.NewLineParser(""), new(schema.Row)
	p.ShareLines() // as Send does
	var buf []byte
	var last policy.Decision
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		line := lines[i%len(lines)]
		i++
		if verr := p.ParseRow(line, std, row); verr != nil {
			b.Fatal(verr)
		}
		l, err := std.ClassifyRow(row, now)
		if err != nil {
			b.Fatal(err)
		}
		in := policy.Input{Provider: "sender", Recipient: "receiver", RecipientRole: "university",
			Labels: l, Agreement: a, Now: now}
		if last.Permit {
			in.Previous = &last
		}
		d := policy.Decide(rb, in)
		if !d.Permit {
			b.Fatalf("denied: %s", d.Reason)
		}
		last = d
		buf = policy.AppendRow(buf[:0], row, d, tz)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// benchAgreement permits every field of synth.Students' records, for
// research, up to L3 (as node/bench's agreement does).
func benchAgreement(now time.Time) *policy.Agreement {
	fields := synth.StudentFields
	return &policy.Agreement{ID: "bench", Provider: "sender", Recipient: "receiver", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisPublicInterest, RecordTypes: map[string][]string{"student": fields},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(time.Hour)}
}
