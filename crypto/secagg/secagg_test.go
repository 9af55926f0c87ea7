package secagg

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/math/polynomial"
	"github.com/cloudflare/circl/secretsharing"
)

func seeded(label string) *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], "eduspace secagg test "+label)
	return rand.NewChaCha8(seed)
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("uni-%02d", i)
	}
	return out
}

// scenario says who drops out when: before sharing (committed, never
// shared: not in U2), before masking (shared, no masked vector: U2 \ U3),
// before unmasking (sent its vector, does not answer).
type scenario struct {
	n, t, cells, minSurvivors             int
	beforeShare, beforeMask, beforeUnmask []int
	wire                                  bool                 // send every message through MarshalBinary and Parse
	input                                 func(i, j int) int64 // participant i's cell j; random when nil
}

type outcome struct {
	round   *Round
	inputs  [][]int64
	parts   []*Participant
	tr      Transcript
	want    []int64 // plain sum over survivors
	masked  map[string]MaskedInput
	dropped map[string]MaskedInput // masked vectors of those who dropped before masking, computed but never sent
}

// run plays a round among n simulated participants.
func run(tb testing.TB, sc scenario, rnd *rand.ChaCha8) outcome {
	tb.Helper()
	r, err := NewRound(Params{RoundID: "q-2026-07-enrolments", Participants: names(sc.n), Threshold: sc.t, VectorLen: sc.cells, MinSurvivors: sc.minSurvivors})
	if err != nil {
		tb.Fatal(err)
	}
	in := func(list []int, i int) bool { return slices.Contains(list, i) }
	o := outcome{round: r, masked: map[string]MaskedInput{}, dropped: map[string]MaskedInput{}}
	ids := r.Participants()
	for _, id := range ids {
		p, err := r.NewParticipant(id, rnd)
		if err != nil {
			tb.Fatal(err)
		}
		o.parts = append(o.parts, p)
		o.tr.Commitments = append(o.tr.Commitments, wire(tb, sc.wire, p.Commit(), r.ParseCommitment))
	}
	inbox := make([][]ShareBundle, sc.n)
	for i, p := range o.parts {
		bundles, err := p.Shares(o.tr.Commitments)
		if err != nil {
			tb.Fatal(err)
		}
		if in(sc.beforeShare, i) {
			continue
		}
		o.tr.Shared = append(o.tr.Shared, p.ID())
		for _, b := range bundles {
			j := r.index[b.To]
			if j != i {
				inbox[j] = append(inbox[j], wire(tb, sc.wire, b, r.ParseShareBundle))
			}
		}
	}
	o.want = make([]int64, sc.cells)
	var survivors []string
	for i, p := range o.parts {
		if in(sc.beforeShare, i) {
			continue
		}
		x := make([]int64, sc.cells)
		for j := range x {
			if sc.input != nil {
				x[j] = sc.input(i, j)
			} else {
				x[j] = int64(rnd.Uint64()%2_000_000_000_001) - 1_000_000_000_000 // counts plus noise, either sign
			}
		}
		o.inputs = append(o.inputs, x)
		m, err := p.Mask(x, inbox[i])
		if err != nil {
			tb.Fatal(err)
		}
		if in(sc.beforeMask, i) {
			o.dropped[p.ID()] = m
			continue
		}
		o.masked[p.ID()] = m
		o.tr.Masked = append(o.tr.Masked, wire(tb, sc.wire, m, r.ParseMaskedInput))
		survivors = append(survivors, p.ID())
		for j := range x {
			o.want[j] += x[j]
		}
	}
	for i, p := range o.parts {
		if in(sc.beforeShare, i) || in(sc.beforeMask, i) || in(sc.beforeUnmask, i) {
			continue
		}
		u, err := p.Unmask(survivors)
		if errors.Is(err, ErrTooFew) {
			continue // the scenario left too few survivors: nobody answers
		}
		if err != nil {
			tb.Fatal(err)
		}
		o.tr.Responses = append(o.tr.Responses, wire(tb, sc.wire, u, r.ParseUnmaskResponse))
	}
	return o
}

// wire sends m through its encoding when on is true.
func wire[M interface{ MarshalBinary() ([]byte, error) }](tb testing.TB, on bool, m M, parse func([]byte) (M, error)) M {
	tb.Helper()
	if !on {
		return m
	}
	b, err := m.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	back, err := parse(b)
	if err != nil {
		tb.Fatalf("parse %T: %v", m, err)
	}
	return back
}

func TestSumEqualsPlainSum(t *testing.T) {
	for _, sc := range []scenario{
		{n: 5, t: 2, cells: 100, wire: true},
		{n: 5, t: 2, cells: 100, beforeMask: []int{3}},
		{n: 5, t: 2, cells: 100, beforeMask: []int{0, 4}},                // t dropouts
		{n: 7, t: 3, cells: 257, beforeMask: []int{1, 2, 6}, wire: true}, // t dropouts
		{n: 7, t: 2, cells: 64, beforeShare: []int{0}, beforeMask: []int{3}, beforeUnmask: []int{5}},
		{n: 10, t: 3, cells: 1000, beforeMask: []int{9}, beforeUnmask: []int{0, 1}}, // only t+1+… answer
		{n: 3, t: 1, cells: 5, beforeMask: []int{1}},
		{n: 9, t: 4, cells: 33, beforeMask: []int{0, 2, 4, 6}}, // 5 = t+1 survivors
	} {
		name := fmt.Sprintf("n=%d/t=%d/share-%v/mask-%v/unmask-%v", sc.n, sc.t, sc.beforeShare, sc.beforeMask, sc.beforeUnmask)
		t.Run(name, func(t *testing.T) {
			o := run(t, sc, seeded(name))
			got, err := o.round.Sum(o.tr)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, o.want) {
				t.Fatalf("secure sum differs from the plain sum:\n got %v\nwant %v", got[:min(5, len(got))], o.want[:min(5, len(got))])
			}
		})
	}
}

// TestSumWrapsModulo2to64: intermediate sums overflow int64, the total does
// not; arithmetic modulo 2⁶⁴ gets it exactly.
func TestSumWrapsModulo2to64(t *testing.T) {
	vals := []int64{math.MaxInt64, math.MaxInt64, -math.MaxInt64, math.MinInt64 + 1, 5}
	sc := scenario{n: 5, t: 2, cells: 3, input: func(i, j int) int64 { return vals[i] - int64(j) }}
	o := run(t, sc, seeded("wrap"))
	got, err := o.round.Sum(o.tr)
	if err != nil {
		t.Fatal(err)
	}
	if o.want[0] != 5 || !slices.Equal(got, o.want) {
		t.Fatalf("sum = %v, want %v", got, o.want)
	}
}

func TestTooFew(t *testing.T) {
	// t+1 dropouts before masking leave fewer than t+1 vectors only when
	// n = 2t+1; the participants refuse to answer and Sum refuses.
	o := run(t, scenario{n: 5, t: 2, cells: 10, beforeMask: []int{0, 1, 2}, beforeUnmask: []int{3, 4}}, seeded("toofew"))
	if _, err := o.round.Sum(o.tr); !errors.Is(err, ErrTooFew) {
		t.Fatalf("2 vectors with t = 2: err = %v, want ErrTooFew", err)
	}
	if _, err := o.parts[3].Unmask([]string{"uni-03", "uni-04"}); !errors.Is(err, ErrTooFew) {
		t.Fatalf("unmask with 2 survivors, t = 2: err = %v, want ErrTooFew", err)
	}
	// fewer survivors than the noise plan assumes: nobody unmasks
	o = run(t, scenario{n: 7, t: 2, cells: 10, minSurvivors: 6, beforeMask: []int{0, 1}}, seeded("toofew-min"))
	if len(o.tr.Responses) != 0 {
		t.Fatalf("%d participants unmasked 5 survivors with MinSurvivors 6", len(o.tr.Responses))
	}
	if _, err := o.round.Sum(o.tr); !errors.Is(err, ErrTooFew) {
		t.Fatalf("5 vectors with MinSurvivors 6: err = %v, want ErrTooFew", err)
	}
	o = run(t, scenario{n: 7, t: 2, cells: 10, minSurvivors: 6, beforeMask: []int{3}}, seeded("min-ok"))
	if got, err := o.round.Sum(o.tr); err != nil || !slices.Equal(got, o.want) {
		t.Fatalf("6 vectors with MinSurvivors 6: err = %v", err)
	}
	// t responses (of t+1 needed) recover nothing
	o = run(t, scenario{n: 5, t: 2, cells: 10, beforeUnmask: []int{0, 1, 2}}, seeded("toofew2"))
	if _, err := o.round.Sum(o.tr); !errors.Is(err, ErrTooFew) {
		t.Fatalf("2 responses with t = 2: err = %v, want ErrTooFew", err)
	}
}

// TestMaskedLooksUniform: a masked vector reveals nothing of the input: its
// bytes pass a χ² test of uniformity whatever the input (zeros, or a
// structured table), it differs from the input in every cell, and the same
// input masked twice gives unrelated vectors.
func TestMaskedLooksUniform(t *testing.T) {
	const cells = 8192
	for _, input := range []string{"zeros", "ramp"} {
		t.Run(input, func(t *testing.T) {
			r, _ := NewRound(Params{RoundID: "uniform-" + input, Participants: names(5), Threshold: 2, VectorLen: cells})
			rnd := seeded(input)
			parts := make([]*Participant, 5)
			var commits []Commitment
			for i, id := range r.Participants() {
				parts[i], _ = r.NewParticipant(id, rnd)
				commits = append(commits, parts[i].Commit())
			}
			inbox := make([][]ShareBundle, 5)
			for i, p := range parts {
				bs, err := p.Shares(commits)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range bs {
					if j := r.index[b.To]; j != i {
						inbox[j] = append(inbox[j], b)
					}
				}
			}
			x := make([]int64, cells)
			if input == "ramp" {
				for i := range x {
					x[i] = int64(i % 50)
				}
			}
			m0, _ := parts[0].Mask(x, inbox[0])
			m1, _ := parts[1].Mask(x, inbox[1])
			var hist [256]int
			same, sameAcross := 0, 0
			for i, v := range m0.Vector {
				for k := range 8 {
					hist[byte(v>>(8*k))]++
				}
				if v == uint64(x[i]) {
					same++
				}
				if v == m1.Vector[i] {
					sameAcross++
				}
			}
			expected := float64(8*cells) / 256
			chi := 0.0
			for _, c := range hist {
				chi += (float64(c) - expected) * (float64(c) - expected) / expected
			}
			// Wilson–Hilferty upper quantile at p = 10⁻⁴ for 255 df
			k := 255.0
			crit := k * math.Pow(1-2/(9*k)+3.719*math.Sqrt(2/(9*k)), 3)
			if chi > crit {
				t.Errorf("masked bytes: χ² = %.1f > %.1f: not uniform", chi, crit)
			}
			if same != 0 || sameAcross != 0 {
				t.Errorf("%d cells equal the input, %d equal another participant's masked cell", same, sameAcross)
			}
			t.Logf("χ² of masked bytes %.1f (critical %.1f)", chi, crit)
		})
	}
}

// TestLateVectorStaysMasked is why masks are double: once a participant is
// declared dropped, the center learns its key-agreement key and can remove
// all its pairwise masks; if its vector then arrives late, the self mask —
// whose seed the survivors never revealed — still hides it.
func TestLateVectorStaysMasked(t *testing.T) {
	const cells = 4096
	o := run(t, scenario{n: 5, t: 2, cells: cells, beforeMask: []int{2}}, seeded("late"))
	if _, err := o.round.Sum(o.tr); err != nil {
		t.Fatal(err)
	}
	r := o.round
	late := o.dropped["uni-02"]
	// the center's knowledge: uni-02's key from t+1 responses
	var shares []secretsharing.Share
	for _, u := range o.tr.Responses[:r.t+1] {
		if len(u.SelfShares) != 4 || len(u.MaskShares) != 1 || u.MaskShares[0].Of != "uni-02" {
			t.Fatalf("response of %s: %d self shares, mask shares %v", u.From, len(u.SelfShares), u.MaskShares)
		}
		v, _ := parseScalar(u.MaskShares[0].Share[:])
		shares = append(shares, secretsharing.Share{ID: g.NewScalar().SetUint64(uint64(r.index[u.From] + 1)), Value: v})
	}
	key, err := secretsharing.Recover(uint(r.t), shares)
	if err != nil {
		t.Fatal(err)
	}
	y := slices.Clone(late.Vector)
	var e expander
	const d = 2
	for v, c := range o.tr.Commitments {
		if v == d {
			continue
		}
		pk, _ := parseElement(c.MaskKey[:])
		pt := g.NewElement().Mul(pk, key)
		e.add(y, pairKey(&r.ctx, mustMarshal(pt), min(v, d), max(v, d)), d < v)
	}
	x := o.inputs[d]
	equal := 0
	for i := range y {
		if int64(y[i]) == x[i] {
			equal++
		}
	}
	if equal != 0 {
		t.Fatalf("%d of %d cells of the late vector revealed", equal, cells)
	}
	// what protects it is the self mask alone: with its seed, which t+1
	// participants could pool but honest ones never reveal for a
	// participant they were told dropped, the vector is x exactly
	var seedShares []secretsharing.Share
	for _, j := range []int{0, 1, 3} {
		seedShares = append(seedShares, secretsharing.Share{
			ID: g.NewScalar().SetUint64(uint64(j + 1)), Value: o.parts[j].held[d].self})
	}
	seed, err := secretsharing.Recover(uint(r.t), seedShares)
	if err != nil {
		t.Fatal(err)
	}
	e.add(y, selfKey(&r.ctx, mustMarshal(seed), d), true)
	for i := range y {
		if int64(y[i]) != x[i] {
			t.Fatalf("cell %d: %d after removing every mask, want %d", i, int64(y[i]), x[i])
		}
	}
}

// TestThresholdHidesSecret: t shares of a secret are consistent with every
// secret, so they reveal nothing; t+1 recover it.
func TestThresholdHidesSecret(t *testing.T) {
	const th = 3
	rnd := seeded("threshold")
	secret := g.RandomScalar(rnd)
	shares := secretsharing.New(rnd, th, secret).Share(7)
	if _, err := secretsharing.Recover(th, shares[:th]); err == nil {
		t.Fatal("recovered from t shares")
	}
	got, err := secretsharing.Recover(th, shares[2:2+th+1])
	if err != nil || !got.IsEqual(secret) {
		t.Fatalf("t+1 shares: recovered %v, err %v", got.IsEqual(secret), err)
	}
	// for any other secret there is a degree-t polynomial through (0, other)
	// and the same t shares: completing it with one more point recovers
	// other, so the t shares alone cannot tell the two apart
	other := g.RandomScalar(rnd)
	xs := []group.Scalar{g.NewScalar()}
	ys := []group.Scalar{other}
	for _, s := range shares[:th] {
		xs = append(xs, s.ID)
		ys = append(ys, s.Value)
	}
	l := polynomial.NewLagrangePolynomial(xs, ys)
	extra := secretsharing.Share{ID: shares[th].ID, Value: l.Evaluate(shares[th].ID)}
	alt, err := secretsharing.Recover(th, append(slices.Clone(shares[:th]), extra))
	if err != nil || !alt.IsEqual(other) {
		t.Fatalf("t shares plus one point did not reach another secret: %v", err)
	}
	if extra.Value.IsEqual(shares[th].Value) {
		t.Fatal("the two secrets share a (t+1)th share: test is vacuous")
	}
}

func TestUnmaskOnce(t *testing.T) {
	o := run(t, scenario{n: 5, t: 2, cells: 4, beforeMask: []int{4}}, seeded("once"))
	p := o.parts[0]
	a, err := p.Unmask([]string{"uni-00", "uni-01", "uni-02", "uni-03"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a.Survivors) != fmt.Sprint(o.tr.Responses[0].Survivors) {
		t.Fatal("same survivor set, different answer")
	}
	if _, err := p.Unmask([]string{"uni-00", "uni-01", "uni-02"}); !errors.Is(err, ErrConflictingSurvivors) {
		t.Fatalf("second survivor set: err = %v, want ErrConflictingSurvivors", err)
	}
	if _, err := o.parts[1].Unmask([]string{"uni-00", "uni-02", "uni-03"}); err == nil {
		t.Fatal("answered a survivor set that omits the participant")
	}
	fresh := run(t, scenario{n: 5, t: 2, cells: 4, beforeUnmask: []int{0, 1, 2, 3, 4}}, seeded("once2"))
	for _, tc := range [][]string{
		{"uni-01", "uni-02", "uni-03"},           // omits self
		{"uni-00", "uni-01", "uni-09"},           // unknown
		{"uni-00", "uni-00", "uni-01"},           // repeated
		{"uni-00", "uni-01", "uni-02", "uni-03"}, // fine
	} {
		_, err := fresh.parts[0].Unmask(tc)
		if (err == nil) != (len(tc) == 4) {
			t.Errorf("Unmask(%v): err = %v", tc, err)
		}
	}
}

func TestInconsistentShares(t *testing.T) {
	o := run(t, scenario{n: 5, t: 2, cells: 4, beforeMask: []int{1}}, seeded("tamper"))
	tampered := o.tr
	tampered.Responses = slices.Clone(o.tr.Responses)
	u := tampered.Responses[0]
	u.SelfShares = slices.Clone(u.SelfShares)
	u.SelfShares[0].Share[0] ^= 1
	tampered.Responses[0] = u
	if _, err := o.round.Sum(tampered); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("tampered self share: err = %v, want ErrInconsistent", err)
	}
	tampered.Responses = slices.Clone(o.tr.Responses)
	u = tampered.Responses[1]
	u.MaskShares = slices.Clone(u.MaskShares)
	u.MaskShares[0].Share[3] ^= 4
	tampered.Responses[1] = u
	if _, err := o.round.Sum(tampered); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("tampered mask share: err = %v, want ErrInconsistent", err)
	}
	// a masked vector claiming another shared set is refused
	tampered = o.tr
	tampered.Masked = slices.Clone(o.tr.Masked)
	tampered.Masked[0].Shared[0] ^= 1
	if _, err := o.round.Sum(tampered); err == nil || !strings.Contains(err.Error(), "another set") {
		t.Fatalf("masked input with another shared set: err = %v", err)
	}
}

func TestNewRoundRejects(t *testing.T) {
	ok := Params{RoundID: "r", Participants: names(5), Threshold: 2, VectorLen: 10}
	if _, err := NewRound(ok); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Params){
		"empty round id":     func(p *Params) { p.RoundID = "" },
		"two participants":   func(p *Params) { p.Participants = names(2); p.Threshold = 1 },
		"threshold 0":        func(p *Params) { p.Threshold = 0 },
		"t+1 > n":            func(p *Params) { p.Threshold = 5; p.MinSurvivors = 5 },
		"duplicate":          func(p *Params) { p.Participants = append(names(4), "uni-00") },
		"control char":       func(p *Params) { p.Participants = append(names(4), "uni\n") },
		"vector length 0":    func(p *Params) { p.VectorLen = 0 },
		"min survivors ≤ t":  func(p *Params) { p.MinSurvivors = 2 },
		"min survivors > n":  func(p *Params) { p.MinSurvivors = 6 },
		"vector length huge": func(p *Params) { p.VectorLen = MaxVectorLen + 1 },
	} {
		p := ok
		p.Participants = slices.Clone(ok.Participants)
		mod(&p)
		if _, err := NewRound(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// order of participants does not matter
	a, _ := NewRound(ok)
	rev := ok
	rev.Participants = slices.Clone(ok.Participants)
	slices.Reverse(rev.Participants)
	b, _ := NewRound(rev)
	if a.Digest() != b.Digest() {
		t.Error("digest depends on the order participants are listed in")
	}
}

func TestParseRejects(t *testing.T) {
	o := run(t, scenario{n: 3, t: 1, cells: 3}, seeded("parse"))
	r := o.round
	other, _ := NewRound(Params{RoundID: "other", Participants: names(3), Threshold: 1, VectorLen: 3})
	c, _ := o.tr.Commitments[0].MarshalBinary()
	m, _ := o.tr.Masked[0].MarshalBinary()
	u, _ := o.tr.Responses[0].MarshalBinary()
	for _, tc := range []struct {
		name  string
		data  []byte
		parse func([]byte) error
	}{
		{"commitment truncated", c[:len(c)-1], func(b []byte) error { _, err := r.ParseCommitment(b); return err }},
		{"commitment trailing", append(slices.Clone(c), 0), func(b []byte) error { _, err := r.ParseCommitment(b); return err }},
		{"commitment version 2", func() []byte { b := slices.Clone(c); b[4] = 2; return b }(), func(b []byte) error { _, err := r.ParseCommitment(b); return err }},
		{"commitment other round", c, func(b []byte) error { _, err := other.ParseCommitment(b); return err }},
		{"commitment as masked", c, func(b []byte) error { _, err := r.ParseMaskedInput(b); return err }},
		{"commitment identity key", func() []byte { b := slices.Clone(c); clear(b[len(b)-64 : len(b)-32]); return b }(), func(b []byte) error { _, err := r.ParseCommitment(b); return err }},
		{"masked truncated", m[:len(m)-3], func(b []byte) error { _, err := r.ParseMaskedInput(b); return err }},
		{"masked wrong length", func() []byte { b := slices.Clone(m); b[len(b)-8*3-1]++; return b }(), func(b []byte) error { _, err := r.ParseMaskedInput(b); return err }},
		{"unmask trailing", append(slices.Clone(u), 1), func(b []byte) error { _, err := r.ParseUnmaskResponse(b); return err }},
	} {
		if err := tc.parse(tc.data); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestRedacted(t *testing.T) {
	r, _ := NewRound(Params{RoundID: "redact", Participants: names(3), Threshold: 1, VectorLen: 1})
	rnd := seeded("redact")
	var ps []*Participant
	var cs []Commitment
	for _, id := range r.Participants() {
		p, _ := r.NewParticipant(id, rnd)
		ps = append(ps, p)
		cs = append(cs, p.Commit())
	}
	bs, _ := ps[0].Shares(cs)
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v %x %s", bs[1], bs[1], bs[1], bs[1], bs[1]),
		fmt.Sprintf("%v %+v %#v %x", ps[0], ps[0], ps[0], ps[0]),
	} {
		if !strings.Contains(s, "redacted") || strings.Contains(s, fmt.Sprintf("%x", bs[1].MaskShare[:4])) {
			t.Errorf("not redacted: %s", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	o := run(f, scenario{n: 3, t: 1, cells: 2}, seeded("fuzz"))
	for _, m := range []interface{ MarshalBinary() ([]byte, error) }{o.tr.Commitments[0], o.tr.Masked[0], o.tr.Responses[0]} {
		b, _ := m.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := o.round
		if c, err := r.ParseCommitment(b); err == nil {
			if back, _ := c.MarshalBinary(); string(back) != string(b) {
				t.Fatal("commitment does not re-encode to the same bytes")
			}
		}
		if s, err := r.ParseShareBundle(b); err == nil {
			if back, _ := s.MarshalBinary(); string(back) != string(b) {
				t.Fatal("share bundle does not re-encode")
			}
		}
		if m, err := r.ParseMaskedInput(b); err == nil {
			if back, _ := m.MarshalBinary(); string(back) != string(b) {
				t.Fatal("masked input does not re-encode")
			}
		}
		if u, err := r.ParseUnmaskResponse(b); err == nil {
			if back, _ := u.MarshalBinary(); string(back) != string(b) {
				t.Fatal("unmask response does not re-encode")
			}
		}
	})
}

// TestMaskRefusesShortShared: a participant masks only when the center
// relays share bundles from at least MinSurvivors participants (itself
// included), not merely t+1: a shorter U2 could not end in a release with
// the noise planned.
func TestMaskRefusesShortShared(t *testing.T) {
	r, err := NewRound(Params{RoundID: "short-u2", Participants: names(5), Threshold: 1, VectorLen: 3, MinSurvivors: 4})
	if err != nil {
		t.Fatal(err)
	}
	rnd := seeded("short-u2")
	var parts []*Participant
	var commits []Commitment
	for _, id := range r.Participants() {
		p, err := r.NewParticipant(id, rnd)
		if err != nil {
			t.Fatal(err)
		}
		parts, commits = append(parts, p), append(commits, p.Commit())
	}
	inbox := map[string][]ShareBundle{}
	for _, p := range parts {
		bundles, err := p.Shares(commits)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bundles {
			if b.To != b.From {
				inbox[b.To] = append(inbox[b.To], b)
			}
		}
	}
	short := inbox["uni-00"][:2] // U2 = {uni-00, two others}: 3 < MinSurvivors 4, though ≥ t+1 = 2
	if _, err := parts[0].Mask([]int64{1, 2, 3}, short); !errors.Is(err, ErrTooFew) {
		t.Fatalf("mask with |U2| = 3, MinSurvivors 4: err = %v, want ErrTooFew", err)
	}
	m, err := parts[1].Mask([]int64{1, 2, 3}, inbox["uni-01"][:3])
	if err != nil {
		t.Fatalf("mask with |U2| = 4, MinSurvivors 4: %v", err)
	}
	u2 := []string{"uni-01", inbox["uni-01"][0].From, inbox["uni-01"][1].From, inbox["uni-01"][2].From}
	if d, err := r.SharedDigest(u2); err != nil || d != m.Shared {
		t.Errorf("SharedDigest(%v) = %x, %v; the masked input says %x", u2, d, err, m.Shared)
	}
	u, err := parts[1].Unmask(u2)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := r.SurvivorsDigest(u2); err != nil || d != u.Survivors {
		t.Errorf("SurvivorsDigest(%v) = %x, %v; the response says %x", u2, d, err, u.Survivors)
	}
}
