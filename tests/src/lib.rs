//! Integration tests for xenvmm.
