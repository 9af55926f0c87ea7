// Package demo runs a whole eduspace space in one process on the embedded
// NATS server: the authority, three universities and the municipal center,
// with synthetic records, permitted and denied shares, and a check of every
// node's evidence chain.
//
// It owns only its temporary directory, and must never reach beyond
// loopback.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
	"github.com/nats-io/nats.go/jetstream"
)

// Space is the demo space's name.
const Space = "demo"

// Options tune a demo run.
type Options struct {
	// Dir keeps the authority's and every node's files; empty uses a
	// temporary directory removed at the end.
	Dir string
	// Students per university (default 300).
	Students int
	// Suite is the space's suite (default crypto.DefaultSuite): the
	// authority selects it in the space's signed policy and every node
	// generates keys of it.
	Suite  crypto.SuiteID
	Logger *slog.Logger
	// Progress, if set, is told each step as it starts.
	Progress func(step string)
}

// Result is what the demo did. Its JSON form is the contract of
// `eduspace demo --json` (version 1).
type Result struct {
	Version          int            `json:"version"`
	Suite            string         `json:"suite"`
	Nodes            []NodeResult   `json:"nodes"`
	Shares           []ShareResult  `json:"shares"`
	Ingested         int            `json:"ingested"`
	Invalid          int            `json:"invalid"`
	Delivered        int            `json:"delivered"`
	Denied           map[string]int `json:"denied"`
	EvidenceVerified bool           `json:"evidence_verified"`
	// Consents granted for the consent-based study, withdrawn afterwards,
	// and the erasures the withdrawals caused at the recipients.
	ConsentsGranted   int `json:"consents_granted"`
	ConsentsWithdrawn int `json:"consents_withdrawn"`
	ErasuresRequested int `json:"erasures_requested"`
	ErasuresConfirmed int `json:"erasures_confirmed"`
	// Aggregate is the center's aggregate round over the three universities.
	// Exported is Nanshan University's export of the credit-transfer
	// records it received, to its own systems.
	Exported  receive.ExportResult `json:"exported"`
	Aggregate AggregateResult      `json:"aggregate"`
	// Joined is the joined aggregate: the school's cohort's progression
	// rates by household registration and gender, with the employment
	// rates in Joined.Employment.
	Joined  *JoinedResult `json:"joined"`
	Seconds float64       `json:"seconds"`
	Dir     string        `json:"dir,omitempty"`
}

// AggregateResult is the demo's aggregate round: students by gender
// across the universities, by secure aggregation with distributed noise
// (node/aggregate/AGGREGATES.md).
type AggregateResult struct {
	Query           string                   `json:"query"`
	Round           string                   `json:"round"`
	GroupBy         []string                 `json:"group_by"`
	Participants    int                      `json:"participants"`
	Survivors       int                      `json:"survivors"`
	CellsReleased   int                      `json:"cells_released"`
	CellsSuppressed int                      `json:"cells_suppressed"`
	RhoSpent        float64                  `json:"rho_spent"`     // zCDP ρ of the release (worst case)
	EpsilonSpent    float64                  `json:"epsilon_spent"` // ε at δ = Delta
	Delta           float64                  `json:"delta"`
	Cells           []aggregate.ReleasedCell `json:"cells"`
	Seconds         float64                  `json:"seconds"` // submitting the query to the release
}

// NodeResult is one node at the end of the demo.
type NodeResult struct {
	ID              string `json:"id"`
	Institution     string `json:"institution"`
	Role            string `json:"role"`
	Records         int64  `json:"records"`
	Received        int64  `json:"received"`
	EvidenceEntries int64  `json:"evidence_entries"`
	EvidenceOK      bool   `json:"evidence_ok"`
}

// ShareResult is one share request and what came of it.
type ShareResult struct {
	Agreement string         `json:"agreement"`
	From      string         `json:"from"`
	To        string         `json:"to"`
	Purpose   string         `json:"purpose"`
	Permitted int            `json:"permitted"`
	Denied    map[string]int `json:"denied"`
	Envelopes int            `json:"envelopes"`
}

type member struct {
	id, institution, prefix string
	role                    crypto.Role
	// school: the senior high school of the joined aggregates, a member
	// with the university role that holds only its cohort's records.
	school bool
}

var members = []member{
	{"uni-beihu", "Beihu University", "2023101", crypto.RoleUniversity, false},
	{"uni-nanshan", "Nanshan Normal University", "2023202", crypto.RoleUniversity, false},
	{"uni-xijiang", "Xijiang University of Technology", "2023303", crypto.RoleUniversity, false},
	{"edu-center", "Municipal Education Big Data Center", "", crypto.RoleCenter, false},
	{School, "Donghai Senior High School", "", crypto.RoleUniversity, true},
}

// rulebook is the demo space's rulebook: GRADING.md §7 as written, except
// that an agreement may let the center receive records (allow_microdata);
// by default it receives aggregates only (policy/REASONS.md).
const rulebook = `{"microdata_to_center": true}`

// agreements of the demo: one that permits most records, one that the
// level rules mostly deny, one that has expired. The two with the center
// allow microdata: a statistics agreement and a consent-based study.
func agreements(now time.Time) []*policy.Agreement {
	year := 365 * 24 * time.Hour
	return []*policy.Agreement{
		{
			ID: "beihu-nanshan-credit-transfer", Provider: "uni-beihu", Recipient: "uni-nanshan",
			Purpose: policy.PurposeCreditTransfer, LegalBasis: policy.BasisContract,
			RecordTypes: map[string][]string{
				"student":      {"student_id", "name", "gender", "birth_date"},
				"course_grade": {"student_id", "course_code", "course_name", "credits", "term", "score", "gpa"},
			},
			MaxLevel:      schema.L3,
			Transforms:    map[string]policy.Transform{"birth_date": policy.TransformGeneraliseYear},
			RetentionDays: 365, ValidFrom: now.Add(-year), ValidUntil: now.Add(year),
		},
		{
			ID: "xijiang-center-statistics", Provider: "uni-xijiang", Recipient: "edu-center",
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{
				"student": {"student_id", "gender", "ethnicity", "health_status"},
			},
			MaxLevel:       schema.L3,
			AllowMicrodata: true,
			RetentionDays:  180, ValidFrom: now.Add(-year), ValidUntil: now.Add(year),
		},
		{
			ID: "beihu-center-health-study", Provider: "uni-beihu", Recipient: "edu-center",
			Purpose: policy.PurposeResearch, LegalBasis: policy.BasisConsent,
			RecordTypes: map[string][]string{
				"student": {"student_id", "gender", "birth_date", "ethnicity"},
			},
			MaxLevel:       schema.L3,
			AllowMicrodata: true,
			Transforms:     map[string]policy.Transform{"birth_date": policy.TransformGeneraliseYear},
			RetentionDays:  365, ValidFrom: now.Add(-year), ValidUntil: now.Add(year),
		},
		{
			ID: "nanshan-xijiang-verification-2024", Provider: "uni-nanshan", Recipient: "uni-xijiang",
			Purpose: policy.PurposeEnrollmentVerification, LegalBasis: policy.BasisContract,
			RecordTypes: map[string][]string{
				"student": {"student_id", "name", "id_number"},
			},
			MaxLevel:      schema.L3,
			RetentionDays: 30, ValidFrom: now.Add(-2 * year), ValidUntil: now.Add(-year),
		},
	}
}

// invalidRecords are ingested with each university's data to show that a
// bad record is refused alone: a resident ID with a wrong check character
// and a field the type does not have.
const invalidRecords = `{"type":"student","student_id":"X-INVALID-1","name":"测试","id_type":"resident_id","id_number":"110101200001011230"}
{"type":"course_grade","student_id":"X-INVALID-2","course_code":"CS101","favourite_colour":"blue"}
`

// Run runs the demo.
func Run(ctx context.Context, o Options) (res Result, err error) {
	start := time.Now()
	if o.Students <= 0 {
		o.Students = 300
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	step := func(s string) {
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "eduspace-demo-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	} else {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("demo: --dir %s: %w", dir, err)
		}
		if len(entries) > 0 {
			return res, fmt.Errorf("demo: --dir %s is not empty", dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return res, err
		}
		res.Dir = dir
	}
	now := time.Now()

	step("authority: root key and member credentials")
	authDir := filepath.Join(dir, "authority")
	suite := o.Suite
	if suite == 0 {
		suite = crypto.DefaultSuite
	}
	if _, err := authority.InitFor(authDir, suite); err != nil {
		return res, err
	}
	ak, err := authority.Load(authDir)
	if err != nil {
		return res, err
	}

	rulebookFile := filepath.Join(dir, "rulebook.json")
	if err := os.WriteFile(rulebookFile, []byte(rulebook), 0o600); err != nil {
		return res, err
	}

	step("embedded NATS with JetStream")
	emb, err := bus.StartEmbedded(filepath.Join(dir, "nats"), "")
	if err != nil {
		return res, err
	}
	defer emb.Shutdown()

	step("authority: space policy selecting suite " + suite.String())
	if err := publishPolicy(ctx, ak, authDir, suite, emb, now); err != nil {
		return res, err
	}

	nodes := map[string]*node.Node{}
	defer func() {
		for _, n := range nodes {
			err = errors.Join(err, n.Close())
		}
	}()
	for _, m := range members {
		nd := filepath.Join(dir, "nodes", m.id)
		if _, err := authority.Provision(ak, nd, m.id, suite, authority.Member{
			Space: Space, Institution: m.institution, Role: m.role, Valid: 30 * 24 * time.Hour,
		}, now); err != nil {
			return res, err
		}
	}
	step("authority: space policy naming uni-xijiang the linkage evaluator")
	if err := publishLinkage(ctx, ak, authDir, filepath.Join(dir, "nodes", Evaluator), suite, emb, now); err != nil {
		return res, err
	}
	for _, m := range members {
		nd := filepath.Join(dir, "nodes", m.id)
		cfg := node.DefaultConfig()
		cfg.NodeID, cfg.Space, cfg.DataDir = m.id, Space, nd
		cfg.AuthorityKey = filepath.Join(authDir, authority.PublicKeyFile)
		cfg.Rulebook = rulebookFile
		cfg.Suite = suite.String()
		cfg.Admin.Listen = ""
		n, err := node.Open(ctx, cfg, node.Env{Logger: log, Embedded: emb})
		if err != nil {
			return res, err
		}
		nodes[m.id] = n
	}
	res.Suite = suite.String()

	step("ingest synthetic records at the universities")
	for i, m := range members {
		if m.role != crypto.RoleUniversity || m.school {
			continue
		}
		var buf bytes.Buffer
		if _, err := (synth.Synth{Prefix: m.prefix, Students: o.Students, Seed: uint64(i + 1), Now: now}).Write(&buf); err != nil {
			return res, err
		}
		buf.WriteString(invalidRecords)
		ir, err := nodes[m.id].Ingest(ctx, &buf, "")
		if err != nil {
			return res, err
		}
		res.Ingested += ir.Stored
		res.Invalid += ir.Invalid
	}

	step("consents for the health study at Beihu University (one student in five)")
	for i := 0; i < o.Students; i += 5 {
		id := fmt.Sprintf("%s%04d", members[0].prefix, i+1)
		// A consent's id is kept and logged in clear: a form number, never
		// the student's.
		if _, err := nodes["uni-beihu"].GrantConsent(ctx, policy.ConsentRecord{ID: healthConsentID(i), Subject: id,
			Purpose: policy.PurposeResearch, Recipients: []string{"edu-center"}, Granted: now.Add(-time.Hour)}); err != nil {
			return res, err
		}
		res.ConsentsGranted++
	}

	step("agreements and shares")
	res.Denied = map[string]int{}
	want := map[string]int{}
	for _, a := range agreements(now) {
		for _, id := range []string{a.Provider, a.Recipient} {
			if err := nodes[id].AddAgreement(ctx, a); err != nil {
				return res, err
			}
		}
		sr, err := nodes[a.Provider].Share(ctx, a.ID)
		if err != nil {
			return res, err
		}
		res.Shares = append(res.Shares, ShareResult{Agreement: a.ID, From: a.Provider, To: a.Recipient,
			Purpose: string(a.Purpose), Permitted: sr.Permitted, Denied: sr.Denied, Envelopes: sr.Envelopes})
		for r, c := range sr.Denied {
			res.Denied[r] += c
		}
		want[a.Recipient] += sr.Permitted
	}

	step("wait for delivery")
	deadline := time.Now().Add(60 * time.Second)
	for id, k := range want {
		for {
			st, err := nodes[id].Status(ctx)
			if err != nil {
				return res, err
			}
			if st.Received >= int64(k) {
				break
			}
			if time.Now().After(deadline) {
				return res, fmt.Errorf("demo: %s received %d of %d records within 30s", id, st.Received, k)
			}
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	step("Nanshan University exports the credit-transfer records it received (evidence: count and digest)")
	if res.Exported, err = nodes["uni-nanshan"].ExportReceived(ctx, receive.ExportOptions{Agreement: "beihu-nanshan-credit-transfer"}, io.Discard); err != nil {
		return res, err
	}

	step("withdraw two consents; the center erases and confirms")
	for _, i := range []int{0, 5} {
		wr, err := nodes["uni-beihu"].WithdrawConsent(ctx, healthConsentID(i))
		if err != nil {
			return res, err
		}
		res.ConsentsWithdrawn++
		res.ErasuresRequested += wr.Requests
	}
	for {
		var confirmed int
		rep := 0
		for _, i := range []int{0, 5} {
			r, err := nodes["uni-beihu"].SubjectReport(ctx, fmt.Sprintf("%s%04d", members[0].prefix, i+1))
			if err != nil {
				return res, err
			}
			for _, d := range r.Deliveries {
				if d.Erasure != "" {
					rep++
				}
				if d.Erasure == "confirmed" {
					confirmed++
				}
			}
		}
		if confirmed == rep {
			res.ErasuresConfirmed = res.ErasuresRequested
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("demo: %d of %d erasures confirmed within the time limit", confirmed, rep)
		}
		time.Sleep(10 * time.Millisecond)
	}

	step("aggregates-only agreements with the center; a share of records under one is denied")
	unis, err := centerAggregateAgreements(ctx, nodes, now)
	if err != nil {
		return res, err
	}
	sr, err := nodes[unis[0]].Share(ctx, unis[0]+"-center-aggregates")
	if err != nil {
		return res, err
	}
	res.Shares = append(res.Shares, ShareResult{Agreement: unis[0] + "-center-aggregates", From: unis[0], To: "edu-center",
		Purpose: string(policy.PurposeStatistics), Permitted: sr.Permitted, Denied: sr.Denied, Envelopes: sr.Envelopes})
	for r, c := range sr.Denied {
		res.Denied[r] += c
	}
	if sr.Permitted != 0 {
		return res, fmt.Errorf("demo: %d records permitted to the center under an aggregates-only agreement", sr.Permitted)
	}

	step("aggregate round: students by gender across the universities (secure aggregation, distributed noise)")
	if res.Aggregate, err = aggregateRound(ctx, nodes, unis); err != nil {
		return res, err
	}

	step("joined aggregates: a senior high school's cohort linked to two universities under the school's agreement with each (progression and employment rates by hukou_type and gender)")
	// A cohort of twice the students per university, and 400 at least,
	// so that the four main cells pass k and the population minimum.
	ing, inv, err := joinedCohort(ctx, nodes, max(2*o.Students, 400), now)
	if err != nil {
		return res, err
	}
	res.Ingested, res.Invalid = res.Ingested+ing, res.Invalid+inv
	if res.Joined, err = joinedAggregates(ctx, nodes); err != nil {
		return res, err
	}

	step("verify every node's evidence chain")
	res.EvidenceVerified = true
	for _, m := range members {
		n := nodes[m.id]
		st, err := n.Status(ctx)
		if err != nil {
			return res, err
		}
		head, verr := n.VerifyEvidence(ctx)
		ok := verr == nil
		res.EvidenceVerified = res.EvidenceVerified && ok
		res.Delivered += int(st.Received)
		res.Nodes = append(res.Nodes, NodeResult{ID: m.id, Institution: m.institution, Role: string(m.role),
			Records: st.Records, Received: st.Received, EvidenceEntries: head.Count, EvidenceOK: ok})
	}
	sort.Slice(res.Nodes, func(i, j int) bool { return res.Nodes[i].ID < res.Nodes[j].ID })

	step("publish evidence checkpoints and wait until every node holds everyone's")
	latest := map[string]int64{}
	for _, m := range members {
		if err := nodes[m.id].Checkpoint(ctx); err != nil {
			return res, err
		}
		if latest[m.id], err = nodes[m.id].CheckpointHeld(ctx, m.id); err != nil {
			return res, err
		}
	}
	for _, holder := range members {
		for _, m := range members {
			for {
				held, err := nodes[holder.id].CheckpointHeld(ctx, m.id)
				if err != nil {
					return res, err
				}
				if held >= latest[m.id] {
					break
				}
				if time.Now().After(deadline) {
					return res, fmt.Errorf("demo: %s holds no checkpoint of %s's latest evidence", holder.id, m.id)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	res.Version = 1
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// centerAggregateAgreements gives the center a statistics agreement with
// each university for the aggregate round, without allow_microdata: under
// it the center receives aggregates only. It returns the universities.
func centerAggregateAgreements(ctx context.Context, nodes map[string]*node.Node, now time.Time) ([]string, error) {
	var unis []string
	for _, m := range members {
		if m.role != crypto.RoleUniversity || m.school {
			continue
		}
		unis = append(unis, m.id)
		a := &policy.Agreement{ID: m.id + "-center-aggregates", Provider: m.id, Recipient: "edu-center",
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"gender"}}, MaxLevel: schema.L2,
			RetentionDays: 365, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(365 * 24 * time.Hour)}
		for _, id := range []string{m.id, "edu-center"} {
			if err := nodes[id].AddAgreement(ctx, a); err != nil {
				return nil, err
			}
		}
	}
	return unis, nil
}

// aggregateRound runs one aggregate round over the universities: students
// by gender, k = 10, ρ = 0.05, noise on. With three universities and one
// colluder tolerated, t > (3 + 1)/2 needs t = 3: no dropout is tolerated,
// and the noise is planned for the t − c = 2 honest universities.
func aggregateRound(ctx context.Context, nodes map[string]*node.Node, unis []string) (AggregateResult, error) {
	start := time.Now()
	center := nodes["edu-center"]
	info, err := center.Aggregator().Submit(ctx, aggregate.Query{ID: "demo-students-by-gender", RecordType: "student",
		Purpose: policy.PurposeStatistics, GroupBy: []aggregate.Dimension{{Field: "gender", Values: []string{"女", "男"}}},
		Measure: aggregate.Measure{Kind: "count"}, K: 10, Rho: 0.05, Participants: unis, Threshold: 3,
		Colluders: 1, RoundTimeout: aggregate.Duration(30 * time.Second)})
	if err != nil {
		return AggregateResult{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	rel, err := center.Aggregator().Wait(wctx, info.Round)
	if err != nil {
		return AggregateResult{}, err
	}
	return AggregateResult{Query: rel.Query, Round: rel.ID, GroupBy: rel.GroupBy, Participants: len(rel.Participants),
		Survivors: len(rel.Survivors), CellsReleased: rel.CellsReleased, CellsSuppressed: rel.CellsSuppressed,
		RhoSpent: rel.Rho, EpsilonSpent: rel.Epsilon, Delta: rel.Delta, Cells: rel.Cells,
		Seconds: time.Since(start).Seconds()}, nil
}

// publishPolicy signs the space's policy naming suite and publishes it on
// the embedded server, where every node reads it when it opens.
func publishPolicy(ctx context.Context, ak *crypto.AuthorityKey, authDir string, suite crypto.SuiteID, emb *bus.Embedded, now time.Time) error {
	_, data, err := authority.SetSpacePolicy(ak, authDir, Space, suite, now)
	if err != nil {
		return err
	}
	return publishSpacePolicy(ctx, emb, data)
}

// publishSpacePolicy publishes the signed space policy data on the
// embedded server as the authority.
func publishSpacePolicy(ctx context.Context, emb *bus.Embedded, data []byte) error {
	nc, err := bus.Connect(bus.ConnectOptions{Name: "demo-authority", Embedded: emb})
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("space policy: jetstream: %w", err)
	}
	return authority.PublishSpacePolicy(ctx, js, Space, data)
}

// healthConsentID is the id of the health-study consent form of the
// demo's i-th student at Beihu University (one in five signs one).
func healthConsentID(i int) string { return fmt.Sprintf("health-study-form-%03d", i/5+1) }
