package linkage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// The record type linkage reads, and the id_type of a resident id (its
// fields are collect's rec).
const (
	recordType = "student"
	residentID = "resident_id"
)

// PartSize is how many elements one proof covers in the requests this
// node makes (fewer where the NATS server's maximum payload is under
// ≈ 90 KiB): proofs are checked part by part, in parallel.
const PartSize = 1024

// answerTimeout is how long Pseudonyms waits for the next answer.
const answerTimeout = 2 * time.Minute

// Report counts what one linkage did; it holds no identifier and no
// pseudonym.
type Report struct {
	Purpose   string `json:"purpose"`
	Epoch     string `json:"epoch"`
	Evaluator string `json:"evaluator"`
	KeyID     string `json:"key_id"`
	// Records is how many student records were read.
	Records int `json:"records"`
	// Evaluated is how many people got a pseudonym.
	Evaluated int `json:"evaluated"`
	// Malformed records carry a resident id that fails its format, date
	// or check character.
	Malformed int `json:"malformed"`
	// Duplicate records were left out: their id is also another
	// student's, their student has two different ids, or they repeat a
	// record already counted (whose student is kept).
	Duplicate int `json:"duplicate"`
	// Missing records have no resident id (another id type, or none).
	Missing int `json:"missing"`
	// Cached is how many of the Evaluated were evaluated before, under the
	// same purpose, epoch and key, since the node started: not asked for
	// again, not counted again at the evaluator.
	Cached int `json:"cached"`
	// Excluded = Malformed + Duplicate + Missing = Records − Evaluated.
	Excluded int     `json:"excluded"`
	Chunks   int     `json:"chunks"`
	Seconds  float64 `json:"seconds"`
}

// Progress is a step of Pseudonyms, for a progress display.
type Progress struct {
	Stage string `json:"stage"` // read, sent, verified
	Done  int    `json:"done"`
	Total int    `json:"total"`
}

// person is one student to evaluate.
type person struct{ student, id string }

// collect reads the student records and keeps one (student, id) per
// person whose resident id is valid and unambiguous.
func (s *Service) collect(ctx context.Context, rep *Report) ([]person, error) {
	type rec struct {
		Student string `json:"student_id"`
		Type    string `json:"id_type"`
		Number  string `json:"id_number"`
	}
	var all []person
	err := s.d.ScanRecords(ctx, recordType, func(_ string, body []byte) error {
		rep.Records++
		var r rec
		if err := json.Unmarshal(body, &r); err != nil || r.Student == "" {
			rep.Malformed++
			return nil
		}
		if r.Number == "" || (r.Type != "" && r.Type != residentID) {
			rep.Missing++
			return nil
		}
		id := schema.NormalizeResidentID(r.Number)
		if !schema.ValidResidentID(id) {
			rep.Malformed++
			return nil
		}
		all = append(all, person{r.Student, id})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read student records: %w", err)
	}
	idsOf, studentsOf := map[string]map[string]int{}, map[string]map[string]int{}
	for _, p := range all {
		if idsOf[p.student] == nil {
			idsOf[p.student] = map[string]int{}
		}
		idsOf[p.student][p.id]++
		if studentsOf[p.id] == nil {
			studentsOf[p.id] = map[string]int{}
		}
		studentsOf[p.id][p.student]++
	}
	var out []person
	for student, ids := range idsOf {
		n := 0
		for _, k := range ids {
			n += k
		}
		if len(ids) != 1 {
			rep.Duplicate += n // two ids for one student: neither is guessed
			continue
		}
		var id string
		for id = range ids {
		}
		if len(studentsOf[id]) != 1 {
			rep.Duplicate += n // one id for two students: neither is guessed
			continue
		}
		rep.Duplicate += n - 1 // the same record again: the student is kept
		out = append(out, person{student, id})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].student < out[j].student })
	return out, nil
}

// Pseudonyms returns the pseudonym of every student this node holds with a
// valid, unambiguous resident id, for purpose and epoch, keyed by
// student_id, and the report of what was evaluated and left out. The
// identifiers leave the node only blinded; each answer's proof is checked
// against the key the space's policy names. progress, when not nil, is
// called as the work advances.
func (s *Service) Pseudonyms(ctx context.Context, purpose policy.Purpose, epoch string, progress func(Progress)) (map[string][32]byte, Report, error) {
	start := s.d.Now()
	if epoch == "" {
		epoch = DefaultEpoch(start.Year())
	}
	rep := Report{Purpose: string(purpose), Epoch: epoch}
	if progress == nil {
		progress = func(Progress) {}
	}
	if err := validPurposeEpoch(purpose, epoch); err != nil {
		return nil, rep, err
	}
	if !requesterRole(s.d.Role) && !s.d.Options.anyRole {
		return nil, rep, &RefusedError{Reason: RefuseRole}
	}
	ev, evCred, err := s.evaluator(ctx)
	if err != nil {
		return nil, rep, err
	}
	rep.Evaluator, rep.KeyID = ev.Node, KeyID(ev.Suite, ev.Key)
	pk, err := publicKey(ev)
	if err != nil {
		return nil, rep, err
	}
	people, err := s.collect(ctx, &rep)
	if err != nil {
		return nil, rep, err
	}
	rep.Excluded = rep.Malformed + rep.Duplicate + rep.Missing
	progress(Progress{Stage: "read", Done: rep.Records, Total: rep.Records})
	out := make(map[string][32]byte, len(people))
	// People evaluated before under the same purpose, epoch and key are
	// not asked for again: their pseudonyms are kept in memory.
	ck := cacheKey{string(purpose), epoch, rep.KeyID}
	todo := s.cache.known(ck, people, out)
	rep.Cached = len(people) - len(todo)
	people = todo
	if len(people) == 0 {
		rep.Evaluated = len(out)
		rep.Seconds = s.d.Now().Sub(start).Seconds()
		return out, rep, nil
	}
	fresh := make(map[string][32]byte, len(people))

	info := Info(string(purpose), epoch)
	tk, err := pk.tweaked(info)
	if err != nil {
		return nil, rep, err
	}
	part, perChunk := s.chunkSize()
	chunks := (len(people) + perChunk - 1) / perChunk
	rep.Chunks = chunks
	req := newRequestID()
	answers := make(chan message, 2*chunks)
	refused := make(chan string, 1)
	s.mu.Lock()
	s.pending[req] = &waiting{purpose: string(purpose), epoch: epoch, answers: answers, refused: refused}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, req)
		s.mu.Unlock()
	}()

	// Blinding and sending run ahead of the answers: chunk c+1 is blinded
	// while the evaluator works on chunk c.
	type sent struct {
		batches []*blindBatch // one per part
	}
	sentChunks := make([]sent, chunks)
	var sentMu sync.Mutex
	// The sender is waited for before returning, so that it never calls
	// progress after the caller is gone.
	sendCtx, cancelSend := context.WithCancel(ctx)
	var sender sync.WaitGroup
	defer sender.Wait()
	defer cancelSend()
	sendErr := make(chan error, 1)
	sender.Go(func() {
		sendErr <- func() error {
			for c := range chunks {
				if err := sendCtx.Err(); err != nil {
					return err
				}
				lo, hi := c*perChunk, min(len(people), (c+1)*perChunk)
				batches, elems, err := blindChunk(people[lo:hi], part)
				if err != nil {
					return err
				}
				sentMu.Lock()
				sentChunks[c] = sent{batches}
				sentMu.Unlock()
				m := message{V: 1, Type: msgRequest, Request: req, Chunk: c, Chunks: chunks, Total: len(people),
					Purpose: string(purpose), Epoch: epoch, KeyID: rep.KeyID, Part: part, Elements: elems}
				if err := s.send(sendCtx, ev.Node, evCred, m); err != nil {
					return err
				}
				progress(Progress{Stage: "sent", Done: hi, Total: len(people)})
			}
			return nil
		}()
	})

	got := make([]bool, chunks)
	verified := 0
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	for done := 0; done < chunks; {
		select {
		case <-ctx.Done():
			return nil, rep, ctx.Err()
		case err := <-sendErr:
			if err != nil {
				return nil, rep, fmt.Errorf("send linkage request: %w", err)
			}
			sendErr = nil
		case reason := <-refused:
			return nil, rep, &RefusedError{Reason: reason}
		case <-timer.C:
			return nil, rep, fmt.Errorf("linkage evaluator %s sent no answer for %s: check that it runs and reaches the space", ev.Node, answerTimeout)
		case m := <-answers:
			timer.Reset(answerTimeout)
			if m.Chunk < 0 || m.Chunk >= chunks || got[m.Chunk] {
				continue
			}
			if m.Type == msgRefusal {
				reason := m.Reason
				if !slices.Contains(Reasons, reason) {
					reason = RefuseEvaluatorDown
				}
				return nil, rep, &RefusedError{Reason: reason}
			}
			sentMu.Lock()
			batches := sentChunks[m.Chunk].batches
			sentMu.Unlock()
			if batches == nil {
				continue // an answer to a chunk not sent: ignored
			}
			got[m.Chunk] = true
			done++
			lo := m.Chunk * perChunk
			hi := min(len(people), lo+perChunk)
			outputs, err := finalizeChunk(tk, batches, m, hi-lo, part)
			if err != nil {
				if rerr := s.refuse(ctx, ev.Node, string(purpose), epoch, RefuseProof, hi-lo); rerr != nil {
					return nil, rep, rerr
				}
				return nil, rep, &RefusedError{Reason: RefuseProof}
			}
			for i, o := range outputs {
				ps := pseudonymOf(o)
				out[people[lo+i].student] = ps
				fresh[people[lo+i].id] = ps
			}
			verified += hi - lo
			if err := s.d.DB.Write(ctx, func(tx *sql.Tx) error {
				return s.d.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidenceKind, Peer: ev.Node, Purpose: string(purpose),
					Rule: epochRule(epoch), Reason: "requested", Count: hi - lo})
			}); err != nil {
				return nil, rep, err
			}
			s.m.Evaluations.WithLabelValues("requested").Add(float64(hi - lo))
			progress(Progress{Stage: "verified", Done: verified, Total: len(people)})
		}
	}
	s.cache.add(ck, fresh)
	rep.Evaluated = len(out)
	rep.Seconds = s.d.Now().Sub(start).Seconds()
	return out, rep, nil
}

// chunkSize is how many elements one proof covers and one request
// envelope carries: a whole number of parts, the envelope (elements in
// base64, proofs, header, seal) well under half the server's maximum
// payload.
func (s *Service) chunkSize() (part, chunk int) {
	maxPayload := s.d.MaxPayload
	if maxPayload <= 0 {
		maxPayload = 1 << 20
	}
	fit := int(maxPayload / 2 / (ElementSize * 4 / 3)) // elements in base64 in half the payload
	part = max(MinPart, min(PartSize, fit))
	parts := max(1, min(MaxChunk/part, fit/part))
	return part, parts * part
}

// blindChunk blinds people's ids, part by part in parallel.
func blindChunk(people []person, part int) ([]*blindBatch, []byte, error) {
	parts := (len(people) + part - 1) / part
	batches := make([]*blindBatch, parts)
	elems := make([]byte, len(people)*ElementSize)
	if err := forParts(parts, func(p int) error {
		lo, hi := p*part, min(len(people), (p+1)*part)
		inputs := make([][]byte, hi-lo)
		for i := range inputs {
			inputs[i] = []byte(people[lo+i].id)
		}
		var err error
		batches[p], err = blind(inputs, elems[lo*ElementSize:hi*ElementSize])
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("blind: %w", err)
	}
	return batches, elems, nil
}

// finalizeChunk checks an answer's proofs under the tweaked key and
// unblinds its elements, part by part in parallel; k is how many elements
// the chunk carried, part how many each proof covers.
func finalizeChunk(tk tweakedKey, batches []*blindBatch, m message, k, part int) ([][]byte, error) {
	if m.Part != part || len(m.Elements) != k*ElementSize || len(m.Proofs) != len(batches) {
		return nil, errors.New("answer does not match its request")
	}
	out := make([][]byte, k)
	if err := forParts(len(batches), func(p int) error {
		lo, hi := p*part, min(k, (p+1)*part)
		o, err := batches[p].finalize(tk, m.Elements[lo*ElementSize:hi*ElementSize], m.Proofs[p])
		if err != nil {
			return err
		}
		copy(out[lo:hi], o)
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// send queues a request chunk to the evaluator, or evaluates it here when
// this node is the evaluator.
func (s *Service) send(ctx context.Context, to string, cred *crypto.Credential, m message) error {
	if to == s.d.NodeID {
		// The evaluator linking its own students: the same checks, counts
		// and evidence, without the transport.
		self := &crypto.Credential{NodeID: s.d.NodeID, Role: s.d.Role}
		return s.evaluateSelf(ctx, self, m)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	key := cred.CurrentKEMKey()
	if key == nil {
		return fmt.Errorf("linkage evaluator %s has no KEM key in its credential", to)
	}
	if err := s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		_, err := s.d.Enqueue(ctx, tx, crypto.Header{Recipient: to, Count: 1, Kind: crypto.KindLinkage}, key,
			s.d.Layout.ControlSubject(to, s.d.NodeID), body, 0)
		return err
	}); err != nil {
		return err
	}
	s.d.WakeRelay()
	return nil
}
