package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; PRAGMA user_version holds how many have
// been applied. Never edit a migration that has shipped: append a new one.
var migrations = []string{
	// 1: the first schema.
	`
CREATE TABLE records (
	id          INTEGER PRIMARY KEY,
	key         BLOB    NOT NULL UNIQUE, -- SHA-256 of type and canonical body: ingest is idempotent
	type        TEXT    NOT NULL,
	subject     TEXT    NOT NULL,        -- subject key value; never leaves the node
	level       TEXT    NOT NULL,        -- level at ingest
	body        BLOB    NOT NULL,        -- the record's fields as JSON
	ingested_ms INTEGER NOT NULL
);
CREATE INDEX records_type ON records(type, id);

-- agreements: body is the policy.Agreement decisions use; signed the policy.SignedAgreement with
-- both parties' signatures (NULL for one installed on both sides by their operators).
-- state: proposed (by this node, awaiting the peer), offered (by the peer, awaiting this node),
-- active, revoked.
CREATE TABLE agreements (
	id       TEXT PRIMARY KEY,
	body     BLOB    NOT NULL,
	state    TEXT    NOT NULL DEFAULT 'active',
	signed   BLOB,
	added_ms INTEGER NOT NULL
);

-- shared: which record went out under which agreement, so a share is never repeated.
CREATE TABLE shared (
	agreement   TEXT    NOT NULL,
	record_id   INTEGER NOT NULL REFERENCES records(id),
	envelope_id TEXT    NOT NULL,
	PRIMARY KEY (agreement, record_id)
) WITHOUT ROWID;

-- pair_seq: per peer and envelope kind, the next outgoing sequence number and the highest received.
CREATE TABLE pair_seq (
	peer     TEXT    NOT NULL,
	kind     INTEGER NOT NULL,
	next_out INTEGER NOT NULL DEFAULT 1,
	last_in  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (peer, kind)
) WITHOUT ROWID;

-- outbox: sealed envelopes, written with the decision that made them; the relay publishes and marks them.
CREATE TABLE outbox (
	id          INTEGER PRIMARY KEY,
	envelope_id TEXT    NOT NULL UNIQUE,
	recipient   TEXT    NOT NULL,
	kind        INTEGER NOT NULL,        -- envelope kind: 1 records, 2 receipt, 3 erasure request, 4 erasure receipt
	subject     TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	records     INTEGER NOT NULL,
	data        BLOB    NOT NULL,
	created_ms  INTEGER NOT NULL,
	attempt_ms  INTEGER,                 -- the relay began publishing it: it may have left
	sent_ms     INTEGER,                 -- JetStream acknowledged the publish
	receipt_ms  INTEGER,                 -- the recipient's signed receipt arrived (records envelopes)
	agreement   TEXT,                    -- records envelopes: the agreement, purpose and record type
	purpose     TEXT,
	record_type TEXT
);
CREATE INDEX outbox_unsent ON outbox(id) WHERE sent_ms IS NULL;

-- inbox: every envelope accepted from a peer; the envelope id makes receiving idempotent.
CREATE TABLE inbox (
	envelope_id TEXT    PRIMARY KEY,
	sender      TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	agreement   TEXT    NOT NULL,
	purpose     TEXT    NOT NULL,
	record_type TEXT    NOT NULL,
	records     INTEGER NOT NULL,
	created_ms  INTEGER NOT NULL,
	received_ms INTEGER NOT NULL,
	UNIQUE (sender, seq)
);

-- received: the records that arrived, one row per envelope: its plaintext as the provider sent it
-- (NDJSON, one record per line, direct identifiers tokenised), checked against the standard.
CREATE TABLE received (
	envelope_id TEXT    PRIMARY KEY REFERENCES inbox(envelope_id),
	type        TEXT    NOT NULL,
	records     INTEGER NOT NULL,
	body        BLOB    NOT NULL
) WITHOUT ROWID;

-- checkpoints: signed checkpoints of evidence logs, this node's own and its peers', as published on
-- the space. A checkpoint says: after count entries, node's chain head was head.
CREATE TABLE checkpoints (
	node       TEXT    NOT NULL,
	count      INTEGER NOT NULL,
	head       BLOB    NOT NULL,
	time_ms    INTEGER NOT NULL,
	data       BLOB    NOT NULL, -- the signed checkpoint (crypto.SignCheckpoint)
	credential TEXT    NOT NULL, -- the signer's member credential (JWT), to verify data offline
	PRIMARY KEY (node, count)
) WITHOUT ROWID;

-- consents: the consent ledger, one row per consent record (policy.ConsentRecord as JSON).
CREATE TABLE consents (
	id         TEXT    PRIMARY KEY,
	subject    TEXT    NOT NULL, -- subject key value; never leaves the node
	purpose    TEXT    NOT NULL,
	body       BLOB    NOT NULL,
	updated_ms INTEGER NOT NULL
);
CREATE INDEX consents_purpose ON consents(purpose, subject);

-- deliveries: whose records went out in which envelope (the subject as its keyed evidence hash),
-- at which level and with which fields: the subject report, erasures and the volume rules read it.
-- Rows are appended in order and not indexed by subject: an index on a random key would rewrite a
-- page per record at every commit (measured: it halved the pipeline's throughput); reading one
-- subject's deliveries is a scan, done only for a subject report or a withdrawal.
CREATE TABLE deliveries (
	id          INTEGER PRIMARY KEY,
	subject     TEXT NOT NULL,
	envelope_id TEXT NOT NULL,
	level       TEXT NOT NULL,
	fields      TEXT NOT NULL
);
CREATE INDEX deliveries_envelope ON deliveries(envelope_id);

-- erasures: requests sent to recipients after a consent withdrawal, and their signed receipts.
CREATE TABLE erasures (
	id           TEXT    PRIMARY KEY,
	subject      TEXT    NOT NULL, -- keyed evidence hash
	recipient    TEXT    NOT NULL,
	agreement    TEXT    NOT NULL,
	purpose      TEXT    NOT NULL,
	request      BLOB    NOT NULL, -- policy.ErasureRequest as JSON
	requested_ms INTEGER NOT NULL,
	confirmed_ms INTEGER,
	records      INTEGER,          -- records the recipient deleted
	receipt      BLOB              -- policy.ErasureReceipt as JSON
);
CREATE INDEX erasures_subject ON erasures(subject);

-- erased: erasure requests this node carried out for providers, so that a redelivered request is
-- answered once.
CREATE TABLE erased (
	request TEXT    PRIMARY KEY,
	done_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- evidence: the hash chain (package node/evidence).
CREATE TABLE evidence (
	seq       INTEGER PRIMARY KEY,
	entry     BLOB NOT NULL,
	prev_hash BLOB NOT NULL,
	hash      BLOB NOT NULL
);
`,
	// 2: aggregates (node/aggregate/AGGREGATES.md).
	`
-- aggregate_queries: the center's signed aggregate queries and their schedule; next_ms is when the
-- next round of a standing query is due (NULL: none), state active, done or failed.
CREATE TABLE aggregate_queries (
	id         TEXT    PRIMARY KEY,
	signed     BLOB    NOT NULL, -- aggregate.SignedQuery as JSON
	state      TEXT    NOT NULL,
	rounds     INTEGER NOT NULL DEFAULT 0,
	next_ms    INTEGER,
	created_ms INTEGER NOT NULL
);

-- aggregate_releases: the center's released aggregates (noisy, cells under k suppressed), by round id.
CREATE TABLE aggregate_releases (
	id          TEXT    PRIMARY KEY,
	query       TEXT    NOT NULL,
	body        BLOB    NOT NULL, -- aggregate.Release as JSON
	released_ms INTEGER NOT NULL
);
CREATE INDEX aggregate_releases_query ON aggregate_releases(query, released_ms);

-- privacy_ledger: this node's privacy budget per (recipient, dataset), one row holding the
-- policy/privacy Ledger as JSON.
CREATE TABLE privacy_ledger (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	body       BLOB    NOT NULL,
	updated_ms INTEGER NOT NULL
);
`,
	// 3: deliveries in one row per envelope rather than one per record. A row per record, with its
	// list of fields, writes about 350 bytes and a B-tree entry per record at every commit: a third of
	// the sender's database work. The view keeps the per-record form for reading.
	`
-- delivered: per envelope of records, whose records went out in it (the subject as its keyed
-- evidence hash), at which level and with which fields. fields is a JSON array of the distinct
-- field lists (comma-separated names) of the envelope's records; items a JSON array with one
-- [subject, level, index into fields] per record, in envelope order (rows migrated from the old
-- table omit the index: their item i uses fields[i]).
CREATE TABLE delivered (
	envelope_id TEXT PRIMARY KEY,
	fields      TEXT NOT NULL,
	items       TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO delivered(envelope_id, fields, items)
	SELECT envelope_id, json_group_array(fields), json_group_array(json_array(subject, level))
	FROM (SELECT envelope_id, subject, level, fields FROM deliveries ORDER BY envelope_id, id)
	GROUP BY envelope_id;
DROP TABLE deliveries;

-- deliveries: one row per record that went out, read from delivered. Reading one subject's
-- deliveries is a scan, done only for a subject report, a withdrawal or the yearly volume.
CREATE VIEW deliveries AS
	SELECT d.envelope_id AS envelope_id, j.value ->> 0 AS subject, j.value ->> 1 AS level,
		d.fields ->> coalesce(j.value ->> 2, j.key) AS fields
	FROM delivered d, json_each(d.items) j;
`,
	// 4: envelopes apart from the outbox rows the relay and receipts update. SQLite rewrites a whole
	// row on update, so marking a row that holds its envelope would rewrite the envelope (tens of KiB)
	// three times: attempt, sent, receipt.
	`
-- outbox_data: the sealed envelope of outbox row id.
CREATE TABLE outbox_data (
	id   INTEGER PRIMARY KEY,
	data BLOB    NOT NULL
);
INSERT INTO outbox_data(id, data) SELECT id, data FROM outbox;
ALTER TABLE outbox DROP COLUMN data;
`,
	// 5: receipts for several envelopes at once. An envelope stored is queued here in the
	// transaction that stores it; the receipts loop confirms what is queued, one receipt per
	// sender for everything stored within a short linger, and deletes the rows in the transaction
	// that queues the receipt. A receipt per stored group costs a KEM encapsulation, a signature
	// and an outbox row at this end and a decapsulation at the other for every one or two
	// envelopes under load.
	`
-- receipt_queue: envelopes stored and not yet confirmed to their sender.
CREATE TABLE receipt_queue (
	envelope_id TEXT    PRIMARY KEY,
	sender      TEXT    NOT NULL,
	records     INTEGER NOT NULL,
	stored_ms   INTEGER NOT NULL
);
`,
	// 6: tables owned by one package each. pair_seq held both the outbox's sequence numbers and the
	// receiver's; an outbox row now says itself whether its records are ones this node holds, which
	// a consent withdrawal asks.
	`
-- seq_out: per peer and envelope kind, the next outgoing sequence number (package outbox).
CREATE TABLE seq_out (
	peer TEXT    NOT NULL,
	kind INTEGER NOT NULL,
	next INTEGER NOT NULL DEFAULT 1,
	PRIMARY KEY (peer, kind)
) WITHOUT ROWID;
INSERT INTO seq_out(peer, kind, next) SELECT peer, kind, next_out FROM pair_seq;

-- seq_in: per peer and envelope kind, the highest sequence number received (package receive).
CREATE TABLE seq_in (
	peer TEXT    NOT NULL,
	kind INTEGER NOT NULL,
	last INTEGER NOT NULL,
	PRIMARY KEY (peer, kind)
) WITHOUT ROWID;
INSERT INTO seq_in(peer, kind, last) SELECT peer, kind, last_in FROM pair_seq WHERE last_in > 0;
DROP TABLE pair_seq;

-- outbox.held: 1 when every record of a records envelope is one this node holds (a share of its
-- records, not a stream sent through): a queued envelope of held records can be dropped and its
-- records shared again.
ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET held = (records = (SELECT count(*) FROM shared s WHERE s.envelope_id = outbox.envelope_id))
	WHERE kind = 1;
`,
	// 7: records are classified once, at ingest.
	`
-- records.labels: the record's classification at ingest (schema.Standard.AppendLabels), which a
-- share reads rather than classifying the record again; NULL for records held from before.
ALTER TABLE records ADD COLUMN labels BLOB;
`,
	// 8: a receiver answers for envelopes it refuses as well as those it stores, so that their
	// sender knows what never arrived and why rather than waiting for a receipt forever.
	`
-- receipt_queue.refused: the refusal reason of an envelope refused, NULL for one stored.
ALTER TABLE receipt_queue ADD COLUMN refused TEXT;
-- outbox.refused: the reason the recipient gave for refusing the envelope, NULL unless refused.
ALTER TABLE outbox ADD COLUMN refused TEXT;
`,
	// 9: an erasure wins over the records it erases in whatever order they arrive.
	`
-- tombstones: a subject erased from what a sender sent under an agreement; records of the subject in
-- envelopes that sender created up to before_ms are dropped when they arrive later. subject is the
-- subject's token at this node, as the records carry it. Kept until no such envelope can arrive.
CREATE TABLE tombstones (
	sender    TEXT    NOT NULL,
	agreement TEXT    NOT NULL,
	subject   TEXT    NOT NULL,
	request   TEXT    NOT NULL,
	before_ms INTEGER NOT NULL,
	PRIMARY KEY (sender, agreement, subject)
) WITHOUT ROWID;
`,
	// 10: the node's health loop proves the database takes writes.
	`
-- health_probe: one row the health loop rewrites every few seconds (node/health.go).
CREATE TABLE health_probe (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	at_ms INTEGER NOT NULL
);
`,
	// 11: a records envelope names the legal basis it discloses on and the grading standard its
	// records were classified with (crypto/ENVELOPE.md §14).
	`
-- outbox.legal_basis, outbox.standard: what a records envelope's header names (its send entry
-- repeats them); NULL for other envelopes and for those sealed before.
ALTER TABLE outbox ADD COLUMN legal_basis TEXT;
ALTER TABLE outbox ADD COLUMN standard TEXT;
-- inbox.legal_basis, inbox.standard: what the envelope's header named; NULL where it named none
-- (an envelope of version 1).
ALTER TABLE inbox ADD COLUMN legal_basis TEXT;
ALTER TABLE inbox ADD COLUMN standard TEXT;
`,
	// 12: checkpoints anchored with RFC 3161 time-stamp tokens (checkpoint.tsa_url).
	`
-- checkpoints.tsa_token: the DER time-stamp token a TSA issued over SHA-256 of data, for this
-- node's own checkpoints made while a TSA is configured and answered; NULL otherwise.
ALTER TABLE checkpoints ADD COLUMN tsa_token BLOB;
`,
	// 13: a provider restored from an older copy learns again from its recipients the erasures it
	// asked for (node/recovery).
	`
-- erased.provider, erased.body: who asked, and the request as it came (policy.ErasureRequest as
-- JSON, sealed under the data key when storage.encrypt is on); NULL for requests carried out before.
ALTER TABLE erased ADD COLUMN provider TEXT;
ALTER TABLE erased ADD COLUMN body BLOB;
CREATE INDEX erased_provider ON erased(provider, done_ms) WHERE provider IS NOT NULL;

-- recovered: the records a provider restored from an older copy sent after its copy, by keyed hash
-- of agreement and record as it arrived (the evidence log's subject key): the provider's copy does not
-- know it sent them, and one that arrives again from it under the agreement is dropped, not stored
-- twice (package receive).
CREATE TABLE recovered (
	sender    TEXT NOT NULL,
	agreement TEXT NOT NULL,
	digest    BLOB NOT NULL,
	PRIMARY KEY (sender, agreement, digest)
) WITHOUT ROWID;
`,
	// 14: a receipt names the SHA-256 of each envelope it answers for, as it arrived
	// (crypto/ENVELOPE.md §12).
	`
-- outbox.digest: SHA-256 of the sealed envelope; NULL for envelopes sealed before.
ALTER TABLE outbox ADD COLUMN digest BLOB;
-- receipt_queue.digest: SHA-256 of the envelope as it arrived; NULL for envelopes queued before.
ALTER TABLE receipt_queue ADD COLUMN digest BLOB;
`,
	// 15: a restore found out, and a recovery, survive a restart.
	`
-- rewound: set when a peer refused this node's envelopes as replayed, which only a database
-- restored from an older copy explains (package checkpoint): the node fails closed, across
-- restarts, until it is recovered.
CREATE TABLE rewound (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	reason TEXT    NOT NULL,
	at_ms  INTEGER NOT NULL
);

-- recovery_withdrawals: consents a recovery learnt were withdrawn after the copy, written with the
-- entry that reopens the evidence log and withdrawn again before the node sends (package recovery).
CREATE TABLE recovery_withdrawals (
	consent TEXT PRIMARY KEY,
	peer    TEXT NOT NULL
) WITHOUT ROWID;

-- recovered.added_ms: when the hash was kept; hashes are kept for a week after a recovery.
ALTER TABLE recovered ADD COLUMN added_ms INTEGER NOT NULL DEFAULT 0;
`,
	// 16: a node restored from an older copy waits for the agreements it lost.
	`
-- awaited_agreements: agreements in force that a peer holds with this node and this node's
-- restored copy lost (node/recovery); until until_ms, what the peer sends under one waits in
-- JetStream for the agreement to be installed again rather than being refused (package receive).
CREATE TABLE awaited_agreements (
	peer      TEXT    NOT NULL,
	agreement TEXT    NOT NULL,
	until_ms  INTEGER NOT NULL,
	PRIMARY KEY (peer, agreement)
) WITHOUT ROWID;
`,
	// 17: dataset releases (package release).
	`
-- releases: the dataset releases this node made (package release), each for the one recipient and
-- purpose of its agreement: method (k-anonymity or dp-synthetic), the SHA-256 of the rows released,
-- the envelopes that carried them, the risk report and the data card (JSON, no personal data).
CREATE TABLE releases (
	id         TEXT PRIMARY KEY,
	agreement  TEXT    NOT NULL,
	recipient  TEXT    NOT NULL,
	purpose    TEXT    NOT NULL,
	method     TEXT    NOT NULL,
	created_ms INTEGER NOT NULL,
	records    INTEGER NOT NULL,
	digest     TEXT    NOT NULL,
	envelopes  TEXT    NOT NULL,
	report     TEXT    NOT NULL,
	card       TEXT    NOT NULL
) WITHOUT ROWID;

-- release_subjects: the subjects (keyed evidence hashes, never ids) a release included, and how:
-- "row" (a de-identified row of theirs) or "dp_source" (in the source of a synthetic release).
CREATE TABLE release_subjects (
	subject TEXT NOT NULL,
	release TEXT NOT NULL,
	how     TEXT NOT NULL,
	PRIMARY KEY (subject, release)
) WITHOUT ROWID;

-- releases_received: the manifests of the releases this node received (envelope kind 10), as the
-- provider sent them: id, provider, agreement, purpose, method, rows, digest, the manifest (JSON).
CREATE TABLE releases_received (
	id          TEXT PRIMARY KEY,
	provider    TEXT    NOT NULL,
	agreement   TEXT    NOT NULL,
	purpose     TEXT    NOT NULL,
	method      TEXT    NOT NULL,
	records     INTEGER NOT NULL,
	digest      TEXT    NOT NULL,
	received_ms INTEGER NOT NULL,
	manifest    TEXT    NOT NULL
) WITHOUT ROWID;

-- provenance: training-provenance declarations, made here (an ai_service node) or received from
-- the recipient of a release and verified (envelope kind 11); body is the signed declaration.
CREATE TABLE provenance (
	id          TEXT PRIMARY KEY,
	declarer    TEXT    NOT NULL,
	model       TEXT    NOT NULL,
	version     TEXT    NOT NULL,
	use         TEXT    NOT NULL,
	declared_ms INTEGER NOT NULL,
	body        TEXT    NOT NULL
) WITHOUT ROWID;

-- provenance_releases: the releases each declaration names.
CREATE TABLE provenance_releases (
	release    TEXT NOT NULL,
	provenance TEXT NOT NULL,
	PRIMARY KEY (release, provenance)
) WITHOUT ROWID;
`,
	// 18: the catalogue of offered datasets (package catalogue).
	`
-- catalogue_offers: the datasets this node offers (package catalogue), as its operator defined them
-- (catalogue.Offer as JSON; no personal data).
CREATE TABLE catalogue_offers (
	id         TEXT    PRIMARY KEY,
	body       BLOB    NOT NULL,
	updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- catalogue_rows: a dataset's noised row count for one UTC day, drawn once and kept, so that asking
-- again the same day shows the same figure and cannot average the noise away (CATALOGUE.md §3).
CREATE TABLE catalogue_rows (
	dataset  TEXT    NOT NULL,
	day      TEXT    NOT NULL, -- YYYY-MM-DD, UTC
	noised   INTEGER NOT NULL,
	drawn_ms INTEGER NOT NULL,
	PRIMARY KEY (dataset, day)
) WITHOUT ROWID;
-- catalogue_received: the newest catalogue each other member published to this node (catalogue.Message
-- as JSON: noised metadata only), with the envelope that carried it.
CREATE TABLE catalogue_received (
	publisher    TEXT    PRIMARY KEY,
	published_ms INTEGER NOT NULL,
	received_ms  INTEGER NOT NULL,
	envelope_id  TEXT    NOT NULL,
	body         BLOB    NOT NULL
) WITHOUT ROWID;
`,
	// 19: the linkage evaluator's counts (node/linkage): evaluations per
	// requesting member, purpose and epoch, and the request chunks answered.
	`
CREATE TABLE linkage_usage (
	member      TEXT    NOT NULL,
	purpose     TEXT    NOT NULL,
	epoch       TEXT    NOT NULL,
	evaluations INTEGER NOT NULL,
	refused     INTEGER NOT NULL,
	last_ms     INTEGER NOT NULL,
	PRIMARY KEY (member, purpose, epoch)
);
CREATE TABLE linkage_chunks (
	member   TEXT    NOT NULL,
	request  TEXT    NOT NULL, -- the requester's random request id
	chunk    INTEGER NOT NULL,
	elements INTEGER NOT NULL,
	purpose  TEXT    NOT NULL,
	epoch    TEXT    NOT NULL,
	done_ms  INTEGER NOT NULL,
	PRIMARY KEY (member, request, chunk)
);
`,
	// 20: the evidence log's entries by kind (node/evidence Log.About).
	`
-- evidence.kind: the entry's kind, as in the entry (which the chain hashes; this column is outside
-- it), so that the entries of one kind are found without reading the whole log.
ALTER TABLE evidence ADD COLUMN kind TEXT;
UPDATE evidence SET kind = json_extract(CAST(entry AS TEXT), '$.kind');
CREATE INDEX evidence_kind ON evidence(kind, seq);
`,
	// 21: the hashes of records sent before a peer's restore, by when they
	// were kept (package receive forgets them after a week).
	`
CREATE INDEX recovered_added ON recovered(added_ms);
`,
}

func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary knows (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to %d: %w", i+1, err)
		}
	}
	return nil
}
