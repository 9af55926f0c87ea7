package admin

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// The status page: GET /status on the admin listener, one server-rendered
// HTML page (html/template, embedded, no scripts, no external assets) for
// the people who run the node. It shows figures and node ids only, never a
// record, a student or a key.
//
// It needs no bearer token, so that a browser can open it, and answers
// only to loopback peers, and only to requests that no proxy relayed: the
// admin listener's default address is 127.0.0.1, and an operator reaches
// the page from elsewhere through an SSH tunnel (deploy/README.md).

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"age": func(d time.Duration) string { return roundDuration(d) },
}).Parse(statusHTML))

// statusPeer is one member of the space as this node knows it.
type statusPeer struct {
	Node        string    `json:"node"`
	Self        bool      `json:"self"`
	Institution string    `json:"institution"`
	Role        string    `json:"role"`
	Expires     time.Time `json:"expires"`
	ExpiresIn   string    `json:"expires_in"`
	Warn        bool      `json:"warn"`       // the credential expires within 30 days or is not valid
	State       string    `json:"state"`      // "valid", or why the credential does not count
	Source      string    `json:"source"`     // where the credential was read: registry, checkpoint
	Checkpoint  int64     `json:"checkpoint"` // highest evidence count of theirs this node holds
	CheckpointT time.Time `json:"checkpoint_t"`
	SentTo      int64     `json:"sent_to"`   // envelopes of records this node sent them
	RecvFrom    int64     `json:"recv_from"` // envelopes of records this node received from them
}

// statusCount is a labelled figure.
type statusCount struct {
	Label string `json:"label"`
	Value int64  `json:"value"`
}

// statusData is what the page shows.
type statusData struct {
	Generated   time.Time `json:"generated"`
	Node        string    `json:"node"`
	Space       string    `json:"space"`
	Role        string    `json:"role"`
	Institution string    `json:"institution"`
	Suite       string    `json:"suite"`
	CredExpires time.Time `json:"cred_expires"`
	CredLeft    string    `json:"cred_left"`
	CredWarn    bool      `json:"cred_warn"`

	Ready     bool `json:"ready"`
	Connected bool `json:"connected"`
	Blocked   bool `json:"blocked"`

	EvidenceCount  int64         `json:"evidence_count"`
	EvidenceHead   string        `json:"evidence_head"`
	CheckpointAge  time.Duration `json:"checkpoint_age_ns"`
	CheckpointMax  time.Duration `json:"checkpoint_max_ns"`
	OwnCheckpoint  int64         `json:"own_checkpoint"`
	OwnCheckpointT time.Time     `json:"own_checkpoint_t"`
	// Anchoring says whether a TSA anchors the node's checkpoints
	// (checkpoint.tsa_url); without one they are unanchored.
	Anchoring bool `json:"anchoring"`
	// LastAnchoredT is the TSA's time of the node's newest anchored
	// checkpoint; zero when none is.
	LastAnchoredT time.Time `json:"last_anchored_t"`

	OutboxDepth     int64 `json:"outbox_depth"`
	AwaitingReceipt int64 `json:"awaiting_receipt"`
	SequenceMissing int64 `json:"sequence_missing"`

	// Sent: envelopes of records this node sealed, in the last 24 h and in all.
	Sent24           statusExchange `json:"sent24"`
	SentAll          statusExchange `json:"sent_all"`
	Received24       statusInbound  `json:"received24"`
	ReceivedAll      statusInbound  `json:"received_all"`
	Refused          []statusCount  `json:"refused"` // since start, by reason
	RefusedTotal     int64          `json:"refused_total"`
	PermitSinceStart int64          `json:"permit_since_start"`
	DenySinceStart   int64          `json:"deny_since_start"`
	Peers            []statusPeer   `json:"peers"`
	ConsentTable     bool           `json:"consent_table"`
	ErasureTable     bool           `json:"erasure_table"`
	Consents         int64          `json:"consents"`
	ErasuresAll      int64          `json:"erasures_all"`
	ErasuresOpen     int64          `json:"erasures_open"`
	ErasOK           int64          `json:"erasures_confirmed"`

	Problems []string `json:"problems"` // parts of the page that could not be read
}

type statusExchange struct {
	Envelopes int64 `json:"envelopes"`
	Records   int64 `json:"records"`
	Acked     int64 `json:"acked"`
	Confirmed int64 `json:"confirmed"`
	Pending   int64 `json:"pending"`
}

type statusInbound struct {
	Envelopes int64 `json:"envelopes"`
	Records   int64 `json:"records"`
}

// statusPageHandler serves the status page to loopback peers only.
func (s *Server) statusPageHandler() http.Handler {
	return s.loopbackOnly(http.HandlerFunc(s.serveStatusPage))
}

// loopbackOnly lets through requests whose peer is a loopback address and
// that carry no proxy header; others get 403.
func (s *Server) loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		relayed := r.Header.Get("Forwarded") != "" || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("X-Real-Ip") != ""
		if err != nil || ip == nil || !ip.IsLoopback() || relayed {
			s.writeProblem(w, http.StatusForbidden, "status-loopback-only", "The status page answers on loopback only",
				"open it on the node's machine or through an SSH tunnel to the admin listener")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	d := s.statusData(ctx)
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, d); err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "status-failed", "Status page failed", err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, err := w.Write(buf.Bytes())
	s.written(err)
}

// statusData reads everything the page shows. A part that cannot be read
// is named in Problems and shown empty; the page itself always renders.
func (s *Server) statusData(ctx context.Context) statusData {
	now := s.now()
	d := statusData{
		Generated: now, Node: s.nodeID, Space: s.space, Suite: s.suite.String(),
		Ready: s.ready(), Connected: s.connected(), Blocked: s.ckpt.SendingBlocked(),
		CheckpointAge: s.ckpt.Age(), CheckpointMax: s.checkpointMax,
	}
	if s.cred != nil {
		d.Role, d.Institution, d.CredExpires = string(s.cred.Role), s.cred.Institution, s.cred.Expires
		d.CredLeft, d.CredWarn = expiresIn(s.cred.Expires, now)
	}
	problem := func(what string, err error) {
		if err != nil {
			d.Problems = append(d.Problems, what+": "+err.Error())
		}
	}

	count, head, err := s.ev.Head(ctx)
	problem("evidence head", err)
	d.EvidenceCount = count
	if len(head) > 0 {
		d.EvidenceHead = hex.EncodeToString(head[:min(8, len(head))])
	}
	d.OwnCheckpoint, d.OwnCheckpointT, err = s.ckpt.Latest(ctx, s.nodeID)
	problem("own checkpoint", err)
	d.Anchoring = s.ckpt.Anchoring()
	d.LastAnchoredT, err = s.ckpt.LastAnchored(ctx)
	problem("last anchored checkpoint", err)
	for _, x := range []struct {
		what string
		out  *int64
		f    func(context.Context) (float64, error)
	}{{"outbox depth", &d.OutboxDepth, s.out.Depth}, {"awaiting receipt", &d.AwaitingReceipt, s.out.AwaitingReceipt},
		{"sequence missing", &d.SequenceMissing, s.recv.SequenceMissing}} {
		v, err := x.f(ctx)
		problem(x.what, err)
		*x.out = int64(v)
	}

	since := now.Add(-24 * time.Hour).UnixMilli()
	for _, x := range []struct {
		out   *statusExchange
		since time.Time
	}{{&d.Sent24, time.UnixMilli(since)}, {&d.SentAll, time.UnixMilli(0)}} {
		sent, err := s.out.SentSince(ctx, x.since)
		problem("envelopes sent", err)
		*x.out = statusExchange(sent)
	}
	for _, x := range []struct {
		out   *statusInbound
		since int64
	}{{&d.Received24, since}, {&d.ReceivedAll, 0}} {
		var err error
		x.out.Envelopes, x.out.Records, err = s.recv.ReceivedSince(ctx, time.UnixMilli(x.since))
		problem("envelopes received", err)
	}
	s.statusCounters(&d, problem)
	s.statusPeers(ctx, &d, now, problem)
	s.statusConsent(ctx, &d, problem)
	return d
}

// statusCounters reads the refusals and decisions counted since start from
// the node's metrics registry.
func (s *Server) statusCounters(d *statusData, problem func(string, error)) {
	mfs, err := s.m.Registry.Gather()
	if err != nil {
		problem("metrics", err)
		return
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "eduspace_envelopes_refused_total":
			for _, m := range mf.GetMetric() {
				v := int64(m.GetCounter().GetValue())
				reason := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" {
						reason = l.GetValue()
					}
				}
				d.RefusedTotal += v
				if v > 0 {
					d.Refused = append(d.Refused, statusCount{reason, v})
				}
			}
		case "eduspace_policy_decisions_total":
			for _, m := range mf.GetMetric() {
				v := int64(m.GetCounter().GetValue())
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == "permit" {
						d.PermitSinceStart += v
					} else if l.GetName() == "outcome" {
						d.DenySinceStart += v
					}
				}
			}
		}
	}
	sort.Slice(d.Refused, func(i, j int) bool { return d.Refused[i].Label < d.Refused[j].Label })
}

// statusPeers lists every node this node knows of: those whose checkpoints
// it holds (every active member publishes them) and those it exchanged
// envelopes with, each with its credential as the registry serves it (or,
// when the registry cannot answer, as the checkpoint carried it).
func (s *Server) statusPeers(ctx context.Context, d *statusData, now time.Time, problem func(string, error)) {
	peers := map[string]*statusPeer{}
	get := func(id string) *statusPeer {
		p := peers[id]
		if p == nil {
			p = &statusPeer{Node: id, Self: id == s.nodeID}
			peers[id] = p
		}
		return p
	}
	held, err := s.ckpt.Nodes(ctx)
	problem("peers from checkpoints", err)
	for _, h := range held {
		p := get(h.Node)
		p.Checkpoint, p.CheckpointT = h.Count, h.At
	}
	for _, q := range []struct {
		counts func(context.Context) (map[string]int64, error)
		set    func(*statusPeer, int64)
	}{
		{s.out.SentTo, func(p *statusPeer, v int64) { p.SentTo = v }},
		{s.recv.ReceivedFrom, func(p *statusPeer, v int64) { p.RecvFrom = v }},
	} {
		counts, err := q.counts(ctx)
		for id, v := range counts {
			q.set(get(id), v)
		}
		problem("peers from exchanges", err)
	}
	get(s.nodeID)

	for _, p := range peers {
		var cred *crypto.Credential
		if p.Self {
			cred, p.Source = s.cred, "this node"
		} else if s.reg != nil {
			lctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			c, err := s.reg.Lookup(lctx, p.Node)
			cancel()
			if err == nil {
				cred, p.Source = c, "registry"
			} else {
				p.State = shortError(err)
				if c, err2 := s.ckpt.Credential(ctx, p.Node, now); err2 == nil {
					cred, p.Source = c, "checkpoint (registry: "+p.State+")"
				}
			}
		}
		if cred == nil {
			if p.State == "" {
				p.State = "no credential known"
			}
			p.Warn = true
			continue
		}
		p.State = "valid"
		p.Institution, p.Role, p.Expires = cred.Institution, string(cred.Role), cred.Expires
		p.ExpiresIn, p.Warn = expiresIn(cred.Expires, now)
		if s.reg != nil {
			if err := s.reg.CheckRevoked(p.Node, signingKeyID(cred), now); err != nil {
				p.State, p.Warn = "revoked by the space authority", true
			}
		}
		if !now.Before(cred.Expires) {
			p.State, p.Warn = "expired", true
		}
	}
	for _, p := range peers {
		d.Peers = append(d.Peers, *p)
	}
	sort.Slice(d.Peers, func(i, j int) bool {
		if d.Peers[i].Self != d.Peers[j].Self {
			return d.Peers[i].Self
		}
		return d.Peers[i].Node < d.Peers[j].Node
	})
}

// statusConsent counts consent records and erasures where this version of
// the database has those tables; the page says so when it does not.
func (s *Server) statusConsent(ctx context.Context, d *statusData, problem func(string, error)) {
	sum, err := s.consents.Summarise(ctx)
	problem("consents", err)
	d.ConsentTable, d.ErasureTable = err == nil, err == nil
	d.Consents, d.ErasuresAll, d.ErasOK, d.ErasuresOpen = sum.Consents, sum.Erasures, sum.Confirmed, sum.Open
}

// expiresIn says how long until t, and whether that is under 30 days.
func expiresIn(t, now time.Time) (string, bool) {
	left := t.Sub(now)
	if left <= 0 {
		return "expired " + roundDuration(-left) + " ago", true
	}
	return "in " + roundDuration(left), left < 30*24*time.Hour
}

// roundDuration prints d at a precision a person reads at a glance.
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// shortError keeps the first line of err, at most 120 characters: enough
// to say why, and the page never shows more than the error's own words.
func shortError(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// signingKeyID is the id of cred's current signing key, "" when it lists
// none.
func signingKeyID(cred *crypto.Credential) string {
	if len(cred.SigningKeys) == 0 {
		return ""
	}
	return cred.SigningKeys[0].ID
}
