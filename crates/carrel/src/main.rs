//! The `carrel` command.

mod format;

fn main() {
    let _ = format::Placeholder;
}
