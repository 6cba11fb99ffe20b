//! Stderr logging: one line per event, prefixed so a supervisor's captured output says where it came from.

use std::io::Write;

/// Writes one log line to stderr; errors are ignored because a closed stderr must not kill the gateway.
pub fn write(message: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "[gateway] {message}");
}

/// `log!("...")`: format and write one stderr line.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::logging::write(format_args!($($arg)*))
    };
}
