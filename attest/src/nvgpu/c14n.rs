//! Canonical XML 1.1 (W3C, without comments) of an element subtree, as XML-DSig needs it for
//! NVIDIA's RIMs: namespace declarations that are new in scope (default first, then by
//! prefix), attributes by namespace URI then local name, empty elements as start and end
//! tags, text and attribute values escaped, one node (the enveloped signature) left out.
//!
//! The input is the fixed shape of a RIM; what canonicalisation would have to rewrite beyond
//! that (processing instructions, `xml:` attributes, whose inheritance rules differ between
//! versions) is refused rather than guessed at. Comments are left out, as the algorithm says.

use std::collections::BTreeMap;

use roxmltree::{Node, NodeId, NodeType};

use crate::error::{Error, Result};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

fn bad(message: String) -> Error {
    Error::Malformed {
        platform: "nvgpu RIM",
        message,
    }
}

/// The in-scope namespaces of an element, prefix (`""` for the default) → URI.
fn in_scope<'a>(e: Node<'a, '_>) -> BTreeMap<&'a str, &'a str> {
    e.namespaces()
        .filter(|n| n.name() != Some("xml"))
        .map(|n| (n.name().unwrap_or(""), n.uri()))
        .collect()
}

/// The qualified name as written in the source (`ns0:Resource`).
fn source_qname<'a>(text: &'a str, e: Node<'_, '_>) -> &'a str {
    let start = e.range().start + 1;
    let rest = text.get(start..).unwrap_or("");
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .unwrap_or(rest.len());
    &rest[..end]
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// The canonical form of the subtree at `apex` (an element), leaving out the subtree at
/// `exclude` if given.
pub fn canonicalize(apex: Node<'_, '_>, exclude: Option<NodeId>) -> Result<String> {
    if !apex.is_element() {
        return Err(bad("canonicalisation starts at an element".into()));
    }
    let text = apex.document().input_text();
    let mut out = String::with_capacity(text.len());
    // Depth-first without recursion: a deeply nested document cannot exhaust the stack.
    enum Step<'a, 'i> {
        Open(Node<'a, 'i>),
        Close(Node<'a, 'i>),
    }
    let mut stack = vec![Step::Open(apex)];
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Close(e) => {
                out.push_str("</");
                out.push_str(source_qname(text, e));
                out.push('>');
                continue;
            }
            Step::Open(n) => n,
        };
        if Some(node.id()) == exclude {
            continue;
        }
        match node.node_type() {
            NodeType::Text => escape_text(node.text().unwrap_or(""), &mut out),
            NodeType::Comment => {}
            NodeType::PI => {
                return Err(bad(
                    "a processing instruction inside the document is not supported".into(),
                ))
            }
            NodeType::Root => return Err(bad("unexpected document node".into())),
            NodeType::Element => {
                let mine = in_scope(node);
                let parent = match node.parent_element() {
                    Some(p) if node.id() != apex.id() => in_scope(p),
                    _ => BTreeMap::new(),
                };
                out.push('<');
                out.push_str(source_qname(text, node));
                for (prefix, uri) in &mine {
                    let inherited = parent.get(prefix) == Some(uri);
                    let empty_default = prefix.is_empty()
                        && uri.is_empty()
                        && parent.get("").is_none_or(|u| u.is_empty());
                    if inherited || empty_default {
                        continue;
                    }
                    out.push_str(if prefix.is_empty() {
                        " xmlns"
                    } else {
                        " xmlns:"
                    });
                    out.push_str(prefix);
                    out.push_str("=\"");
                    escape_attr(uri, &mut out);
                    out.push('"');
                }
                if !mine.contains_key("") && parent.get("").is_some_and(|u| !u.is_empty()) {
                    out.push_str(" xmlns=\"\"");
                }
                let mut attrs = Vec::new();
                for a in node.attributes() {
                    let ns = a.namespace().unwrap_or("");
                    if ns == XML_NS {
                        return Err(bad(format!(
                            "xml:{} attributes are not supported",
                            a.name()
                        )));
                    }
                    let qname = text.get(a.range_qname()).unwrap_or("");
                    attrs.push((ns, a.name(), qname, a.value()));
                }
                attrs.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
                for (_, _, qname, value) in attrs {
                    out.push(' ');
                    out.push_str(qname);
                    out.push_str("=\"");
                    escape_attr(value, &mut out);
                    out.push('"');
                }
                out.push('>');
                stack.push(Step::Close(node));
                let children: Vec<_> = node.children().collect();
                stack.extend(children.into_iter().rev().map(Step::Open));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        canonicalize(doc.root_element(), None).unwrap()
    }

    /// Cases from the W3C Canonical XML specification's examples (§3.3, §3.4), reduced to
    /// what a RIM can hold.
    #[test]
    fn the_rules_of_the_specification() {
        // Empty elements expanded; attributes sorted, namespaced ones after plain ones, by URI.
        assert_eq!(
            c14n(
                r#"<doc xmlns:b="http://www.ietf.org" xmlns:a="http://www.w3.org"><e5 b:attr="sorted" attr2="all" attr="I'm" a:attr="out"/></doc>"#
            ),
            r#"<doc xmlns:a="http://www.w3.org" xmlns:b="http://www.ietf.org"><e5 attr="I'm" attr2="all" b:attr="sorted" a:attr="out"></e5></doc>"#
        );
        // Superfluous declarations dropped, xmlns="" only where it changes something.
        assert_eq!(
            c14n(
                r#"<doc xmlns="http://x"><a xmlns="http://x"><b xmlns=""><c xmlns=""/></b></a></doc>"#
            ),
            r#"<doc xmlns="http://x"><a><b xmlns=""><c></c></b></a></doc>"#
        );
        // Escapes in text and attributes; character references resolved; comments dropped.
        assert_eq!(
            c14n("<d a=\"&lt;&#x9;&quot;x&#xA;\">&#65;&amp;&lt;&gt;\"'<!-- c --></d>"),
            "<d a=\"&lt;&#x9;&quot;x&#xA;\">A&amp;&lt;&gt;\"'</d>"
        );
        let doc = roxmltree::Document::parse("<d><?pi x?></d>").unwrap();
        assert!(canonicalize(doc.root_element(), None).is_err());
        let doc = roxmltree::Document::parse("<d xml:lang=\"en\"/>").unwrap();
        assert!(canonicalize(doc.root_element(), None).is_err());
    }

    #[test]
    fn a_subtree_carries_its_inherited_namespaces() {
        let doc = roxmltree::Document::parse(
            r#"<r xmlns="http://d" xmlns:p="http://p"><p:s xmlns:q="http://q"><p:t/></p:s></r>"#,
        )
        .unwrap();
        let s = doc.root_element().first_element_child().unwrap();
        assert_eq!(
            canonicalize(s, None).unwrap(),
            r#"<p:s xmlns="http://d" xmlns:p="http://p" xmlns:q="http://q"><p:t></p:t></p:s>"#
        );
        assert_eq!(
            canonicalize(doc.root_element(), Some(s.id())).unwrap(),
            r#"<r xmlns="http://d" xmlns:p="http://p"></r>"#
        );
    }
}
