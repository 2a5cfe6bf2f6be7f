// The floor for a per-call emitter: a process that starts, writes nothing and exits.
fn main() {}
