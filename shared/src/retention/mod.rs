//! Retention: the pure planner and the sweep that carries a plan out.

pub mod abandoned;
pub mod plan;
pub mod sweep;
