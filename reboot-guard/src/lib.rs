//! Placeholder for `daon-reboot-guard`: the crate exists so the workspace has its final shape;
//! the tool itself is tracked by its own issue and ships no binary until it works.
