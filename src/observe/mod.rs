//! Observation: what the database and the apps' own pool endpoints say.

pub mod metric_selector;
