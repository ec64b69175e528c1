//! What the watches have delivered so far, one feed per watched API, and the [`Inputs`] they
//! add up to.
//!
//! A (re)list arrives as `Init`, `InitApply`…, `InitDone`: the items are buffered and replace
//! the feed's objects only at `InitDone`, so a relist after a dropped watch never shows a
//! half-listed (narrowed) cluster. Nothing is published before every feed has finished its
//! first list ([`Feeds::all_synced`]): a DENY not yet listed must not look deleted.

use super::objects::{workload_entries, IstioEntry, NamespaceInfo, PodInfo, ServiceInfo};
use crate::registry::Registry;
use crate::source::Inputs;
use std::collections::BTreeMap;

/// `namespace/name` (namespace empty for cluster-scoped objects).
pub type ObjKey = (String, String);

#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// Boxed: a parsed policy is much larger than a pod, and pods are the many.
    Istio(Box<IstioEntry>),
    Pod(PodInfo),
    Service(ServiceInfo),
    Namespace(NamespaceInfo),
}

/// One watch event, already converted.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A (re)list starts.
    Begin,
    /// An object of the (re)list.
    Listed(ObjKey, Entry),
    /// The (re)list is complete.
    Done,
    Applied(ObjKey, Entry),
    Deleted(ObjKey),
}

#[derive(Debug)]
pub struct Feed {
    /// For logs and errors: `apiserver security.istio.io/v1 authorizationpolicies`.
    pub name: String,
    pub synced: bool,
    objects: BTreeMap<ObjKey, Entry>,
    listing: Option<BTreeMap<ObjKey, Entry>>,
}

#[derive(Debug, Default)]
pub struct Feeds {
    feeds: Vec<Feed>,
}

impl Feeds {
    /// Adds a feed; returns its index for [`Feeds::apply`].
    pub fn add(&mut self, name: String) -> usize {
        self.feeds.push(Feed {
            name,
            synced: false,
            objects: BTreeMap::new(),
            listing: None,
        });
        self.feeds.len() - 1
    }

    pub fn name(&self, feed: usize) -> &str {
        self.feeds.get(feed).map(|f| f.name.as_str()).unwrap_or("?")
    }

    /// Applies one event; returns whether what the feed holds changed.
    pub fn apply(&mut self, feed: usize, event: FeedEvent) -> bool {
        let Some(f) = self.feeds.get_mut(feed) else {
            return false;
        };
        match event {
            FeedEvent::Begin => {
                f.listing = Some(BTreeMap::new());
                false
            }
            FeedEvent::Listed(key, entry) => {
                f.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, entry);
                false
            }
            FeedEvent::Done => {
                let listed = f.listing.take().unwrap_or_default();
                let changed = !f.synced || listed != f.objects;
                f.objects = listed;
                f.synced = true;
                changed
            }
            FeedEvent::Applied(key, entry) => {
                f.objects.insert(key, entry.clone()).as_ref() != Some(&entry)
            }
            FeedEvent::Deleted(key) => f.objects.remove(&key).is_some(),
        }
    }

    /// Whether every feed has completed its first list.
    pub fn all_synced(&self) -> bool {
        self.feeds.iter().all(|f| f.synced)
    }

    /// Feeds still listing for the first time, for logs and `/readyz`.
    pub fn unsynced(&self) -> Vec<&str> {
        self.feeds
            .iter()
            .filter(|f| !f.synced)
            .map(|f| f.name.as_str())
            .collect()
    }

    /// Every Istio object: (feed index, key, entry).
    pub fn istio_entries(&self) -> impl Iterator<Item = (usize, &ObjKey, &IstioEntry)> {
        self.feeds.iter().enumerate().flat_map(|(i, f)| {
            f.objects.iter().filter_map(move |(k, e)| match e {
                Entry::Istio(e) => Some((i, k, e.as_ref())),
                _ => None,
            })
        })
    }

    pub fn object_count(&self) -> usize {
        self.feeds.iter().map(|f| f.objects.len()).sum()
    }

    /// Everything known, as the directory source would have read it from files.
    pub fn inputs(&self) -> Inputs {
        let mut inputs = Inputs::default();
        let mut pods = Vec::new();
        let mut services = Vec::new();
        let mut namespaces = BTreeMap::new();
        let mut pod_feed = "apiserver v1/pods";
        for f in &self.feeds {
            for entry in f.objects.values() {
                match entry {
                    Entry::Istio(e) => {
                        inputs.resources.extend(e.resource.iter().cloned());
                        inputs.errors.extend(e.errors.iter().cloned());
                        inputs.skipped.extend(e.skipped.iter().cloned());
                    }
                    Entry::Pod(p) => {
                        pod_feed = f.name.as_str();
                        pods.push(p);
                    }
                    Entry::Service(s) => services.push(s),
                    Entry::Namespace(n) => {
                        namespaces.insert(n.name.clone(), n.clone());
                    }
                }
            }
        }
        let entries = workload_entries(pods.into_iter(), &services, &namespaces, pod_feed);
        let (registry, errors) = Registry::build(entries);
        inputs.registry = registry;
        inputs.errors.extend(errors.iter().map(|e| e.to_string()));
        inputs
    }
}

/// Whether two [`Inputs`] would compile to the same thing (a relist or a status update that
/// changes nothing must not cause a push).
pub fn same_content(a: &Inputs, b: &Inputs) -> bool {
    a.resources == b.resources
        && a.registry == b.registry
        && a.errors == b.errors
        && a.skipped == b.skipped
        && a.unreadable == b.unreadable
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::objects::istio_entry;
    use super::*;

    fn deny(name: &str) -> (ObjKey, Entry) {
        let v = serde_json::json!({"metadata": {"name": name, "namespace": "foo"}, "spec": {"action": "DENY", "rules": [{}]}});
        (
            (String::from("foo"), name.to_string()),
            Entry::Istio(Box::new(istio_entry(
                v,
                "security.istio.io/v1",
                "AuthorizationPolicy",
                "t",
            ))),
        )
    }

    fn names(f: &Feeds) -> Vec<String> {
        f.inputs()
            .resources
            .iter()
            .map(|r| match r {
                peerguard_filter::istio::Resource::AuthorizationPolicy(o) => {
                    o.metadata.name.clone()
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn nothing_counts_before_every_feed_listed_and_relists_swap_atomically() {
        let mut f = Feeds::default();
        let ap = f.add("policies".into());
        let pods = f.add("pods".into());
        assert!(!f.apply(ap, FeedEvent::Begin));
        let (k, e) = deny("a");
        assert!(!f.apply(ap, FeedEvent::Listed(k, e)));
        assert!(f.apply(ap, FeedEvent::Done));
        assert!(!f.all_synced(), "pods not listed yet");
        assert_eq!(f.unsynced(), vec!["pods"]);
        f.apply(pods, FeedEvent::Begin);
        assert!(
            f.apply(pods, FeedEvent::Done),
            "the first list is a change even when empty"
        );
        assert!(f.all_synced());
        assert_eq!(names(&f), vec!["a"]);

        // A relist in progress leaves the old content in force; the same content is no change.
        f.apply(ap, FeedEvent::Begin);
        assert_eq!(names(&f), vec!["a"], "mid-relist the old objects stay");
        let (k, e) = deny("a");
        f.apply(ap, FeedEvent::Listed(k, e));
        assert!(
            !f.apply(ap, FeedEvent::Done),
            "an identical relist is not a change"
        );
        // A relist without `a` (deleted while the watch was down) removes it at Done only.
        f.apply(ap, FeedEvent::Begin);
        let (k, e) = deny("b");
        f.apply(ap, FeedEvent::Listed(k, e));
        assert_eq!(names(&f), vec!["a"]);
        assert!(f.apply(ap, FeedEvent::Done));
        assert_eq!(names(&f), vec!["b"]);

        // Applying the same object again is no change; deleting an unknown one neither.
        let (k, e) = deny("b");
        assert!(!f.apply(ap, FeedEvent::Applied(k, e)));
        assert!(!f.apply(ap, FeedEvent::Deleted(("foo".into(), "zz".into()))));
        assert!(f.apply(ap, FeedEvent::Deleted(("foo".into(), "b".into()))));
        assert!(names(&f).is_empty());
    }

    #[test]
    fn same_content_ignores_nothing_that_compiles() {
        let mut f = Feeds::default();
        let ap = f.add("policies".into());
        f.apply(ap, FeedEvent::Begin);
        f.apply(ap, FeedEvent::Done);
        let empty = f.inputs();
        let (k, e) = deny("a");
        f.apply(ap, FeedEvent::Applied(k, e));
        assert!(!same_content(&empty, &f.inputs()));
        assert!(same_content(&f.inputs(), &f.inputs()));
    }
}
