//! Istio's default (BASE) path normalization, applied before path matching.
