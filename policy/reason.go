package policy

// Reason is a stable code that explains a decision. The codes are part of
// the node's evidence log and metric labels: they are never renamed, only
// added to. REASONS.md is the table operators read; a test keeps the two in
// step.
type Reason string

// The reason codes, one table for the whole node.
const (
	ReasonPermit              Reason = "permit"                // every rule allowed the record
	ReasonNoAgreement         Reason = "no_agreement"          // no agreement covers this provider, recipient and record
	ReasonAgreementNotValid   Reason = "agreement_not_valid"   // outside the agreement's validity period
	ReasonAgreementRevoked    Reason = "agreement_revoked"     // either side revoked the agreement
	ReasonWrongParty          Reason = "wrong_party"           // the agreement names another provider or recipient
	ReasonTypeNotAgreed       Reason = "type_not_agreed"       // the record type is not in the agreement
	ReasonNoAgreedFields      Reason = "no_agreed_fields"      // nothing of the record is left after dropping unagreed fields
	ReasonLevelAboveAgreement Reason = "level_above_agreement" // the record's level exceeds the agreement's maximum
	ReasonCoreNeverLeaves     Reason = "core_never_leaves"     // CORE data never leaves a node
	ReasonImportantAggregate  Reason = "important_aggregate"   // IMP data leaves only as aggregates
	ReasonSensitiveNeedsBasis Reason = "sensitive_needs_basis" // L4 raw egress without separate consent or statutory duty
	ReasonSensitiveNotRaw     Reason = "sensitive_not_raw"     // L4 raw egress not allowed by the agreement
	ReasonMinorNeedsGuardian  Reason = "minor_needs_guardian"  // subject under 14: guardian consent required
	ReasonConsentMissing      Reason = "consent_missing"       // legal basis is consent and no valid consent is recorded

	ReasonPurposeNotDeclared  Reason = "purpose_not_declared"       // the agreement names no purpose from the vocabulary
	ReasonBasisNotDeclared    Reason = "legal_basis_not_declared"   // the agreement names no legal basis from the list
	ReasonRecipientNotMember  Reason = "recipient_not_member"       // L2 and above go only to admitted members of the space
	ReasonRecipientRole       Reason = "recipient_role_not_allowed" // the recipient's role never receives records (auditor)
	ReasonConsentScope        Reason = "consent_scope"              // a consent exists but does not cover a category that would leave
	ReasonVolumeBulk          Reason = "volume_needs_bulk_approval" // V1: L3 to this recipient reaches the bulk threshold without bulk approval
	ReasonVolumeImportant     Reason = "volume_important"           // V2: the volume makes the data important (IMP); raw egress needs approval
	ReasonVolumeAggregateOnly Reason = "volume_aggregate_only"      // V3: personal data of this many subjects leaves only as aggregates

	ReasonCenterAggregatesOnly Reason = "center_aggregates_only" // the center receives aggregates unless agreement and rulebook allow records
	ReasonRetentionTooLong     Reason = "retention_too_long"     // the agreement keeps records longer than the rulebook allows for its purpose

	ReasonAIServicePurpose     Reason = "ai_service_purpose"            // an ai_service member receives records only under an AI purpose
	ReasonAIPurposeRecipient   Reason = "ai_purpose_recipient"          // records under an AI purpose go only to an ai_service member
	ReasonTrainingMinor        Reason = "training_minor_needs_guardian" // model_training: a minor's record needs the guardian's consent, whatever the basis
	ReasonTrainingSensitive    Reason = "training_no_l4"                // model_training: no field at the sensitive level (L4) or above
	ReasonTrainingNeedsConsent Reason = "training_needs_consent"        // model_training: no standing consent of the subject (none, expired or withdrawn)

	ReasonPersonUnknown Reason = "person_unknown" // the node holds no record showing the subject's age: decided as a minor's, guardian consent required
)

// Reasons lists every reason code, in a stable order. Metrics are
// pre-declared from this list so that label values come from a closed set.
func Reasons() []Reason {
	return []Reason{
		ReasonPermit, ReasonNoAgreement, ReasonAgreementNotValid, ReasonAgreementRevoked,
		ReasonWrongParty, ReasonTypeNotAgreed, ReasonNoAgreedFields, ReasonLevelAboveAgreement,
		ReasonCoreNeverLeaves, ReasonImportantAggregate, ReasonSensitiveNeedsBasis,
		ReasonSensitiveNotRaw, ReasonMinorNeedsGuardian, ReasonConsentMissing,
		ReasonPurposeNotDeclared, ReasonBasisNotDeclared, ReasonRecipientNotMember,
		ReasonRecipientRole, ReasonConsentScope, ReasonVolumeBulk, ReasonVolumeImportant,
		ReasonVolumeAggregateOnly, ReasonCenterAggregatesOnly, ReasonRetentionTooLong,
		ReasonAIServicePurpose, ReasonAIPurposeRecipient, ReasonTrainingMinor, ReasonTrainingSensitive,
		ReasonTrainingNeedsConsent, ReasonPersonUnknown,
	}
}

// Clause is the provision r rests on: an article of the PIPL (Personal
// Information Protection Law) or the DSL (Data Security Law), a part of
// GB/T 43697-2024 (data grading), as GRADING.md applies them, or of the
// Interim Measures for the Management of Generative AI Services (2023,
// "GenAI Measures"). REASONS.md
// gives it with each rule; a test keeps the two in step and every reason
// with one.
func (r Reason) Clause() string { return reasonClauses[r] }

var reasonClauses = map[Reason]string{
	ReasonPermit:               "PIPL art. 6, 13, 23",
	ReasonPersonUnknown:        "PIPL art. 28, 31",
	ReasonNoAgreement:          "PIPL art. 13, 23",
	ReasonAgreementNotValid:    "PIPL art. 13, 23",
	ReasonAgreementRevoked:     "PIPL art. 13, 23",
	ReasonWrongParty:           "PIPL art. 23",
	ReasonTypeNotAgreed:        "PIPL art. 6, 23",
	ReasonNoAgreedFields:       "PIPL art. 6",
	ReasonLevelAboveAgreement:  "GB/T 43697-2024 §4, §6",
	ReasonCoreNeverLeaves:      "DSL art. 21; GB/T 43697-2024 §6.1",
	ReasonImportantAggregate:   "DSL art. 21; GB/T 43697-2024 §6.1, annex G",
	ReasonSensitiveNeedsBasis:  "PIPL art. 28, 29",
	ReasonSensitiveNotRaw:      "PIPL art. 28",
	ReasonMinorNeedsGuardian:   "PIPL art. 28, 31",
	ReasonConsentMissing:       "PIPL art. 13(1), 14",
	ReasonPurposeNotDeclared:   "PIPL art. 6, 23",
	ReasonBasisNotDeclared:     "PIPL art. 13",
	ReasonRecipientNotMember:   "PIPL art. 51",
	ReasonRecipientRole:        "PIPL art. 6, 51",
	ReasonConsentScope:         "PIPL art. 14, 29, 31",
	ReasonVolumeBulk:           "GB/T 43697-2024 §6.3",
	ReasonVolumeImportant:      "DSL art. 21; GB/T 43697-2024 §6.3, annex G",
	ReasonVolumeAggregateOnly:  "DSL art. 21; GB/T 43697-2024 §6.3, annex G",
	ReasonCenterAggregatesOnly: "PIPL art. 6",
	ReasonRetentionTooLong:     "PIPL art. 19",
	ReasonAIServicePurpose:     "PIPL art. 6, 23",
	ReasonAIPurposeRecipient:   "PIPL art. 6, 23",
	ReasonTrainingMinor:        "PIPL art. 28, 31; GenAI Measures art. 7(3)",
	ReasonTrainingSensitive:    "PIPL art. 6, 28; GenAI Measures art. 7(3)",
	ReasonTrainingNeedsConsent: "PIPL art. 14, 15; GenAI Measures art. 7(3)",
}

// The rule identifiers a decision names. Like reason codes they are stable:
// they are written to the evidence log.
const (
	RuleDefaultDeny           = "default-deny"
	RuleAgreementParty        = "agreement.party"
	RuleAgreementRevoked      = "agreement.revoked"
	RuleAgreementValidity     = "agreement.validity"
	RuleAgreementType         = "agreement.record_types"
	RuleAgreementFields       = "agreement.fields"
	RuleAgreementLevel        = "agreement.max_level"
	RuleAgreementConsent      = "agreement.consent"
	RuleAgreementPermit       = "agreement.permit"
	RuleRulebookCore          = "rulebook.core"
	RuleRulebookAggregateOnly = "rulebook.aggregate_only"
	RuleRulebookSensitive     = "rulebook.sensitive"
	RuleRulebookMinor         = "rulebook.minor"

	RuleAgreementPurpose = "agreement.purpose"
	RuleAgreementBasis   = "agreement.legal_basis"
	RuleRulebookMembers  = "rulebook.members"
	RuleRulebookRole     = "rulebook.recipient_role"
	RuleVolumeBulk       = "rulebook.volume.bulk"
	RuleVolumeImportant  = "rulebook.volume.important"
	RuleVolumeAggregate  = "rulebook.volume.aggregate_only"

	RuleRulebookCenter    = "rulebook.center_microdata"
	RuleRulebookRetention = "rulebook.retention"

	RuleRulebookAIService       = "rulebook.ai_service"
	RuleRulebookTrainingMinor   = "rulebook.training.minor"
	RuleRulebookTrainingL4      = "rulebook.training.sensitive"
	RuleRulebookTrainingConsent = "rulebook.training.consent"
)

// Rules lists every rule identifier, in the order Decide applies them.
func Rules() []string {
	return []string{
		RuleDefaultDeny, RuleAgreementParty, RuleAgreementRevoked, RuleAgreementValidity,
		RuleAgreementPurpose, RuleAgreementBasis, RuleAgreementType, RuleRulebookCore,
		RuleRulebookRole, RuleRulebookAIService, RuleRulebookCenter, RuleRulebookRetention, RuleAgreementFields,
		RuleRulebookMembers, RuleRulebookTrainingMinor, RuleRulebookTrainingL4, RuleRulebookTrainingConsent,
		RuleRulebookAggregateOnly,
		RuleRulebookMinor, RuleAgreementLevel, RuleRulebookSensitive, RuleAgreementConsent,
		RuleVolumeAggregate, RuleVolumeImportant, RuleVolumeBulk, RuleAgreementPermit,
	}
}
