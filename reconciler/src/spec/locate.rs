//! Finds the line and column of a dotted key path (`network.vpc.cidr`, `service.secrets.X`)
//! in YAML text, so that validation errors found after parsing still point into the file.
//! Handles block mappings and one level of flow mapping (`vpc: {cidr: ..}`); when a key
//! cannot be found the nearest enclosing key found is used.

pub fn locate(text: &str, path: &str) -> (u64, u64) {
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut best = (1u64, 1u64);
    // Search window: [start, end) line indexes, keys must be indented more than `parent_indent`.
    let (mut start, mut end, mut parent_indent) = (0usize, lines.len(), -1i64);
    for (depth, seg) in segments.iter().enumerate() {
        let seg = seg.split('[').next().unwrap_or(seg);
        let mut found = None;
        for (i, line) in lines.iter().enumerate().take(end).skip(start) {
            let indent = (line.len() - line.trim_start().len()) as i64;
            let body = line.trim_start().trim_start_matches("- ");
            if body.starts_with('#') || body.is_empty() {
                continue;
            }
            if indent <= parent_indent && i > start {
                break;
            }
            if is_key(body, seg) {
                found = Some((i, indent, line.find(seg).unwrap_or(0)));
                break;
            }
        }
        match found {
            Some((i, indent, col)) => {
                best = ((i + 1) as u64, (col + 1) as u64);
                // Flow child on the same line?
                if let Some(next) = segments.get(depth + 1) {
                    if let Some(col) = find_flow_key(lines[i], next) {
                        return ((i + 1) as u64, (col + 1) as u64);
                    }
                }
                start = i + 1;
                parent_indent = indent;
                end = lines.len();
            }
            None => return best,
        }
    }
    best
}

/// Whether a (trimmed) line starts with `seg:` (plain or quoted). Keys may contain `:`.
fn is_key(body: &str, seg: &str) -> bool {
    [format!("{seg}:"), format!("\"{seg}\":"), format!("'{seg}':")].iter().any(|k| body.starts_with(k.as_str()))
}

fn find_flow_key(line: &str, key: &str) -> Option<usize> {
    let open = line.find('{')?;
    let pat = format!("{key}:");
    let rel = line[open..].find(&pat)?;
    let at = open + rel;
    let before = line[..at].chars().last()?;
    (before == '{' || before == ' ' || before == ',').then_some(at)
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "name: x\nregion: us-east-1\nnetwork:\n  vpc:\n    cidr: 10.0.0.0/16\n    azs: 2\nservice:\n  cpu: 256\n  port: 8080\napi: {name: a, throttling: {rate: 1, burst: 2}}\n";

    #[test]
    fn finds_nested_block_keys() {
        assert_eq!(locate(DOC, "network.vpc.cidr"), (5, 5));
        assert_eq!(locate(DOC, "network.vpc.azs"), (6, 5));
        assert_eq!(locate(DOC, "service.port"), (9, 3));
        assert_eq!(locate(DOC, "region"), (2, 1));
    }

    #[test]
    fn finds_flow_keys_and_falls_back_to_parent() {
        assert_eq!(locate(DOC, "api.name"), (10, 7));
        // Missing key: nearest parent.
        assert_eq!(locate(DOC, "service.memory"), (7, 1));
        // Not confused by same key under another parent.
        let doc = "a:\n  port: 1\nb:\n  port: 2\n";
        assert_eq!(locate(doc, "b.port"), (4, 3));
        // Keys that contain a colon (tag keys).
        let doc = "tags:\n  team: x\n  reconciler:stack: y\n";
        assert_eq!(locate(doc, "tags.reconciler:stack"), (3, 3));
    }
}
