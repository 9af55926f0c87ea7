package release

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

func TestHierarchies(t *testing.T) {
	tests := []struct {
		field, value string
		level        int
		want         string
	}{
		{"birth_date", "2005-03-14", 1, "2005"},
		{"birth_date", "2005-03-14", 2, "2005-2009"},
		{"birth_date", "2004", 2, "2000-2004"},
		{"birth_date", "2005-03-14", 3, "*"},
		{"birth_date", "05", 1, "*"},
		{"address", "北京市海淀区学院路1号", 1, "北京市海淀区"},
		{"address", "北京市海淀区学院路1号", 2, "北京市"},
		{"address", "北京市海淀区学院路1号", 3, "*"},
		{"address", "河北省保定市徐水县安肃路", 1, "河北省保定市徐水县"},
		{"address", "浙江省某地", 1, "浙江省"},
		{"address", "somewhere", 1, "*"},
		{"postal_code", "100084", 1, "1000**"},
		{"postal_code", "100084", 2, "10****"},
		{"postal_code", "100084", 3, "*"},
		{"gender", "女", 1, "*"},
	}
	for _, tt := range tests {
		if got := quasiIdentifiers[tt.field].at(tt.value, tt.level); got != tt.want {
			t.Errorf("%s %q at level %d: got %q, want %q", tt.field, tt.value, tt.level, got, tt.want)
		}
	}
}

// people are n rows with birth date, gender and address drawn from r.
func people(r *rand.Rand, n int) []map[string]any {
	rows := make([]map[string]any, n)
	for i := range rows {
		rows[i] = map[string]any{
			"student_id": fmt.Sprintf("tok%d", i),
			"birth_date": time.Date(1995+r.IntN(12), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC).Format("2006-01-02"),
			"gender":     []string{"男", "女"}[r.IntN(2)],
			"address":    fmt.Sprintf("%s%s路%d号", []string{"北京市", "天津市", "上海市"}[r.IntN(3)], []string{"海淀区", "朝阳区", "东城区", "西城区"}[r.IntN(4)], r.IntN(100)),
		}
	}
	return rows
}

// TestAnonymise: on random tables every class of what is kept has at
// least k rows, at most the allowed fraction is suppressed, nothing is
// unique after; fewer rows than k cannot be anonymised.
func TestAnonymise(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ n, k int }{{50, 2}, {200, 5}, {1000, 10}, {3000, 20}} {
		rows := people(r, tc.n)
		a, ok := anonymise(rows, nil, tc.k, 0.05)
		if !ok {
			t.Fatalf("n=%d k=%d: not anonymised", tc.n, tc.k)
		}
		c := map[string]int{}
		for _, i := range a.kept {
			g := generalised(rows[i], a.levels)
			c[fmt.Sprint(g["birth_date"], "|", g["gender"], "|", g["address"])]++
		}
		for key, m := range c {
			if m < tc.k {
				t.Errorf("n=%d k=%d: class %q has %d rows", tc.n, tc.k, key, m)
			}
		}
		if a.suppressed > tc.n*5/100 || len(a.kept)+a.suppressed != tc.n || a.after.Unique != 0 || a.after.Smallest < tc.k {
			t.Errorf("n=%d k=%d: %+v", tc.n, tc.k, a)
		}
		t.Logf("n=%d k=%d: unique before %d (%.2f), classes after %d, smallest %d, suppressed %d, generalised %v",
			tc.n, tc.k, a.before.Unique, a.before.UniqueFraction, a.after.Classes, a.after.Smallest, a.suppressed, levelNames(a.levels))
	}
	if _, ok := anonymise(people(r, 4), nil, 5, 0.05); ok {
		t.Errorf("4 rows anonymised to k = 5")
	}
}

// TestSynthesise: the stated ε is at most the one asked, and close to it;
// the synthetic rows carry only fields with a public domain, with values
// from it; the noised count is near the true count.
func TestSynthesise(t *testing.T) {
	rt, _ := schema.Default().Type("student")
	r := rand.New(rand.NewPCG(3, 4))
	rows := people(r, 2000)
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for _, eps := range []float64{0.1, 1, 4} {
		s := privacy.NewSampler(rand.NewChaCha8([32]byte{5, 6}))
		out, dp, err := synthesise(rows, rt, []string{"address", "birth_date", "gender"}, eps, 1e-6, s, rand.New(rand.NewChaCha8([32]byte{})), now)
		if err != nil {
			t.Fatal(err)
		}
		if dp.Epsilon > eps || dp.Epsilon < 0.99*eps || len(dp.Dropped) != 1 || dp.Dropped[0] != "address" {
			t.Errorf("ε %v: %+v", eps, dp)
		}
		if d := len(out) - 2000; d*d > 400*400 {
			t.Errorf("ε %v: %d synthetic rows of 2000", eps, len(out))
		}
		women := 0
		for _, row := range out {
			if _, ok := row["address"]; ok || len(row) > 2 {
				t.Fatalf("synthetic row %v", row)
			}
			if row["gender"] == "女" {
				women++
			}
		}
		t.Logf("ε %v: ρ %.4g, σ² %s, %d rows, %d women", eps, dp.Rho, dp.Sigma2, len(out), women)
	}
}

// BenchmarkAnonymise reports the rows a second k-anonymisation of a
// table of birth dates, genders and addresses handles, k = 10.
func BenchmarkAnonymise(b *testing.B) {
	rows := people(rand.New(rand.NewPCG(7, 8)), 20000)
	b.ResetTimer()
	for b.Loop() {
		if _, ok := anonymise(rows, nil, 10, 0.05); !ok {
			b.Fatal("not anonymised")
		}
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestAnonymisePersons: k counts persons, not records. Five course
// records of one student with the same quasi-identifiers are a class of
// one person: with k = 5 they are suppressed or generalised into a class
// of five persons, never released as a class of their own.
func TestAnonymisePersons(t *testing.T) {
	var rows []map[string]any
	var subjects []string
	add := func(subject, birth, address string, n int) {
		for range n {
			rows = append(rows, map[string]any{"birth_date": birth, "gender": "女", "address": address, "score": 90})
			subjects = append(subjects, subject)
		}
	}
	// One student, five records, alone in her district and birth year.
	add("s-lone", "2001-03-04", "北京市海淀区中关村大街1号", 5)
	// Ninety-five others, each with one record, elsewhere.
	for i := range 95 {
		add(fmt.Sprintf("s%d", i), fmt.Sprintf("%d-01-01", 1995+i%5), "上海市浦东新区世纪大道1号", 1)
	}
	a, ok := anonymise(rows, subjects, 5, 0.05)
	if !ok {
		t.Fatal("not anonymised")
	}
	persons := map[string]map[string]bool{}
	for _, i := range a.kept {
		g := generalised(rows[i], a.levels)
		key := fmt.Sprint(g["birth_date"], "|", g["gender"], "|", g["address"])
		if persons[key] == nil {
			persons[key] = map[string]bool{}
		}
		persons[key][subjects[i]] = true
	}
	for key, p := range persons {
		if len(p) < 5 {
			t.Errorf("released class %q holds %d persons, want at least k = 5", key, len(p))
		}
	}
	if a.before.Unique != 5 || a.after.Unique != 0 {
		t.Errorf("unique before %d (want 5: the lone student's records), after %d (want 0)", a.before.Unique, a.after.Unique)
	}
}

// BenchmarkSynthesise reports the source rows a synthetic table of birth
// dates and genders is made from per second, 20 000 rows, ε = 1.
func BenchmarkSynthesise(b *testing.B) {
	rt, _ := schema.Default().Type("student")
	rows := people(rand.New(rand.NewPCG(9, 10)), 20000)
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	s := privacy.NewSampler(rand.NewChaCha8([32]byte{11}))
	draw := rand.New(rand.NewChaCha8([32]byte{12}))
	for b.Loop() {
		if _, _, err := synthesise(rows, rt, []string{"birth_date", "gender"}, 1, 1e-6, s, draw, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
