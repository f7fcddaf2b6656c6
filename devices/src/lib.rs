//! Host-side backends ("dom0" devices) for xenvmm guests: xenstore, console, block and net
//! over the Xen shared rings. Every byte they read from guest memory is hostile input.
#![forbid(unsafe_code)]
