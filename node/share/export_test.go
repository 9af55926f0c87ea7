package share

// BenchAgreement is benchAgreement, for the external tests.
var BenchAgreement = benchAgreement
