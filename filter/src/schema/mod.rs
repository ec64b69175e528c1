//! The filter's configuration ([`WorkloadPolicy`]) and the input/output of one decision
//! ([`Request`], [`Decision`]). Everything here is plain serde data: the server writes it,
//! the filter reads it, `explain` prints it.

mod decision;
mod decision_log;
mod policy;
mod request;
mod summary;

pub use decision::*;
pub use decision_log::*;
pub use policy::*;
pub use request::*;
pub use summary::*;
