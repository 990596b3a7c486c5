//! Wire protocols. Each owns its framing, startup and relay, and hands the stages
//! protocol-neutral values.

pub mod mysql;
pub mod pg;
