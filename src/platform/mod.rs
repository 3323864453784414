//! The targets poolwarden acts on. Each turns its platform's objects into the
//! decision core's plain data ([`pass::Target::read`]) and carries the plan out
//! ([`pass::Target::execute`]); [`pass::run`] is the one pass they share.

pub mod budget;
pub mod fly;
pub mod kubernetes;
pub mod pass;
pub mod pooler;
pub mod report;
pub mod sizing;
