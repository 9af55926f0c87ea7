package admin

import (
	"context"
	"net/http"
	"time"

	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/policy/privacy"
)

// Overview is a node's whole state on one screen, for `eduspace status`
// (GET /v1/overview): what the status page shows, and the node's health,
// keys, agreements and privacy budgets. It holds counts, ids and times,
// no personal data.
type Overview struct {
	statusData
	// Health are what keeps the node from being ready (Config.Health).
	Health []string `json:"health"`
	// Keys are the keys the node's credential lists, current first per
	// kind (node/keys/KEYS.md).
	Keys []OverviewKey `json:"keys"`
	// Agreements are the node's agreements, without their field lists.
	Agreements []OverviewAgreement `json:"agreements"`
	Budgets    []privacy.Account   `json:"budgets"`
	// Datasets counts the space's catalogue as this node holds it.
	Datasets OverviewDatasets `json:"datasets"`
	// Releases counts the dataset releases this node made.
	Releases OverviewReleases `json:"releases"`
	// Linkage is the space's linkage as this node sees it, without the
	// evaluator's per-member usage (eduspace linkage status has it).
	Linkage *linkage.Status `json:"linkage,omitempty"`
}

// OverviewDatasets counts datasets: this node's offers, and the members'
// it received.
type OverviewDatasets struct {
	Offered int `json:"offered"`
	Members int `json:"members"`
}

// OverviewReleases counts this node's dataset releases.
type OverviewReleases struct {
	Count   int       `json:"count"`
	Records int       `json:"records"`
	Last    time.Time `json:"last,omitzero"`
}

// OverviewKey is one key of the node's credential.
type OverviewKey struct {
	Kind    string `json:"kind"` // kem, signing, checkpoint
	ID      string `json:"id"`
	Current bool   `json:"current"`
}

// OverviewAgreement is one agreement at a glance.
type OverviewAgreement struct {
	ID         string    `json:"id"`
	Provider   string    `json:"provider"`
	Recipient  string    `json:"recipient"`
	Purpose    string    `json:"purpose"`
	State      string    `json:"state"`
	ValidUntil time.Time `json:"valid_until"`
}

// overview gathers the Overview.
func (s *Server) overview(ctx context.Context) Overview {
	o := Overview{statusData: s.statusData(ctx), Health: s.problems()}
	if s.cred != nil {
		for i, k := range s.cred.KEMKeys {
			o.Keys = append(o.Keys, OverviewKey{"kem", k.ID, i == 0})
		}
		for i, k := range s.cred.SigningKeys {
			o.Keys = append(o.Keys, OverviewKey{"signing", k.ID, i == 0})
		}
		for i, k := range s.cred.CheckpointKeys {
			o.Keys = append(o.Keys, OverviewKey{"checkpoint", k.ID, i == 0})
		}
	}
	if list, err := s.agreements.List(ctx); err != nil {
		o.Problems = append(o.Problems, "agreements: "+err.Error())
	} else {
		for _, a := range list {
			o.Agreements = append(o.Agreements, OverviewAgreement{ID: a.ID, Provider: a.Provider, Recipient: a.Recipient,
				Purpose: string(a.Purpose), State: a.State, ValidUntil: a.ValidUntil})
		}
	}
	if b, err := s.agg.Budgets(ctx); err != nil {
		o.Problems = append(o.Problems, "budgets: "+err.Error())
	} else {
		o.Budgets = b
	}
	if s.cat != nil {
		if offered, members, err := s.cat.Counts(ctx); err != nil {
			o.Problems = append(o.Problems, "catalogue: "+err.Error())
		} else {
			o.Datasets = OverviewDatasets{Offered: offered, Members: members}
		}
	}
	if s.releases != nil {
		if list, err := s.releases.List(ctx); err != nil {
			o.Problems = append(o.Problems, "releases: "+err.Error())
		} else {
			for _, r := range list {
				o.Releases.Count++
				o.Releases.Records += r.Records
				if r.Created.After(o.Releases.Last) {
					o.Releases.Last = r.Created
				}
			}
		}
	}
	if s.linkage != nil {
		if st, err := s.linkage.Status(ctx); err != nil {
			o.Problems = append(o.Problems, "linkage: "+err.Error())
		} else {
			st.Usage = nil
			o.Linkage = &st
		}
	}
	return o
}

func (s *Server) handleOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	s.writeJSON(w, s.overview(ctx))
}
