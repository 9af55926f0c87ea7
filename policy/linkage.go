package policy

// Valid reports whether p is one of the space's purposes (the closed
// vocabulary agreements, consents and linkage pseudonyms name).
func (p Purpose) Valid() bool { return purposes[p] }
