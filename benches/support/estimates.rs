//! Reading criterion's saved results back, shared by the benches that print
//! ratio tables (`#[path = "support/estimates.rs"] mod estimates;`).

/// Criterion's saved mean for `group/id` in ns (from
/// `target/criterion/<group>/<id>/new/estimates.json` in the workspace's
/// target directory, or `CARGO_TARGET_DIR`), or `None` when that benchmark
/// has not run.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let path = format!(
        "{dir}/criterion/{}/{id}/new/estimates.json",
        group.replace('/', "_")
    );
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.find("\"mean\"")?..];
    let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = &rest[at..];
    rest[..rest.find([',', '}'])?].trim().parse().ok()
}

/// Prints every `id` of `group` with its mean and its ratio to the first.
#[allow(dead_code)] // compare.rs prints its own tables
pub fn print_ratios(group: &str, ids: &[&str]) {
    let Some(base) = mean_ns(group, ids[0]) else {
        return;
    };
    println!("\n{group}: ratio to {}", ids[0]);
    for id in ids {
        if let Some(ns) = mean_ns(group, id) {
            println!("  {id:<22} {ns:>10.2} ns  {:>6.2}x", ns / base);
        }
    }
}
