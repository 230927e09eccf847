//! Automatic splits by size (`--range-max-keys`), between real `kvstore` processes: a range
//! that outgrows the bound splits at its middle key while clients write, until every range is
//! under it, and no write is lost or refused on the way.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{check_all, write_all, TestCluster};
use net::client::KvClient;

const BOUND: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_split_by_themselves_under_load_until_each_holds_at_most_the_bound() {
    let mut cluster = TestCluster::configure(3);
    cluster.extra_args = vec!["--range-max-keys".into(), "300".into()];
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(BOUND).await;
    let mut acked = BTreeMap::new();
    for prefix in ["a-", "m-", "x-"] {
        write_all(cluster.servers(), prefix, 0..500, &mut acked).await;
    }
    let ranges = || async {
        KvClient::new(cluster.servers())
            .ranges()
            .await
            .unwrap_or_default()
    };
    // A range just created counts its keys once it has applied an entry (its leader's first):
    // the counts are read until they add up.
    e2e::eventually(
        BOUND,
        "every range at most 300 keys, 1500 in all",
        || async {
            let ranges = ranges().await;
            let keys: u64 = ranges.iter().filter_map(|r| r.keys).sum();
            ranges.len() >= 5
                && keys == 1500
                && ranges.iter().all(|r| r.keys.is_some_and(|k| k <= 300))
        },
    )
    .await;
    check_all(|| KvClient::new(cluster.servers()), &acked).await;
}
