//! A TAP-like report: `ok - <name>` / `not ok - <name>: <detail>`, then a count.

use core::fmt::{self, Debug};

use crate::println;

/// Counts the checks of one program and prints each result as it happens.
pub struct Checks {
    program: &'static str,
    passed: u32,
    failed: u32,
}

impl Checks {
    pub const fn new(program: &'static str) -> Self {
        Checks { program, passed: 0, failed: 0 }
    }

    /// Records one check; `detail` is printed only when it fails. Returns `ok`.
    pub fn check(&mut self, name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
        if ok {
            self.passed += 1;
            println!("ok - {name}");
        } else {
            self.failed += 1;
            println!("not ok - {name}: {detail}");
        }
        ok
    }

    /// Checks `got == want`.
    pub fn eq<T: PartialEq + Debug>(&mut self, name: &str, got: T, want: T) -> bool {
        self.check(name, got == want, format_args!("got {got:?}, want {want:?}"))
    }

    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Prints `<program>: N checks passed, M failed` and returns M.
    pub fn summary(&self) -> u32 {
        println!("{}: {} checks passed, {} failed", self.program, self.passed, self.failed);
        self.failed
    }
}
