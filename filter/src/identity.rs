//! SPIFFE identities and Istio's principal string matching.
