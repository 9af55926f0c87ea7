package policy

// Reason is a stable code that explains a decision. The codes are part of
// the node's evidence log and metric labels: they are never renamed, only
// added to.
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
)

// Reasons lists every reason code, in a stable order. Metrics are
// pre-declared from this list so that label values come from a closed set.
func Reasons() []Reason {
	return []Reason{
		ReasonPermit, ReasonNoAgreement, ReasonAgreementNotValid, ReasonAgreementRevoked,
		ReasonWrongParty, ReasonTypeNotAgreed, ReasonNoAgreedFields, ReasonLevelAboveAgreement,
		ReasonCoreNeverLeaves, ReasonImportantAggregate, ReasonSensitiveNeedsBasis,
		ReasonSensitiveNotRaw, ReasonMinorNeedsGuardian, ReasonConsentMissing,
	}
}
