//! The targets poolwarden acts on. Each turns its platform's objects into the
//! decision core's plain data and carries the plan out.

pub mod fly;
pub mod kubernetes;
pub mod report;
