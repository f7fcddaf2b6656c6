//! xenvmm
