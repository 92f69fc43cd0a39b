"""Target `diagrams`: sequence and topology diagrams (Mermaid and PlantUML) from the IR.

The same diagram model serves three uses: the declared sequences rendered into
`generated/diagrams/`, an observed flow drawn from its trace (`specstack trace
--format mermaid`), and the comparison of the two (`specstack diagram --diff`).
Templates only place values; every label, id and style is computed here.
SVGs are rendered from the PlantUML sources by `generator.pipeline.render.plantuml`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from generator.pipeline.render.base import OutputFile, RenderContext, md_header

if TYPE_CHECKING:
    from jinja2 import Environment

    from specstack_runtime.ir import IR, Component, Interaction

Mark = Literal["", "missing", "extra", "out-of-order", "failed", "mismatch"]


@dataclass(frozen=True)
class ViaStyle:
    """How one communication type is drawn, in both languages and in the legend."""

    label: str
    color: str
    mmd: str  # Mermaid sequence arrow
    puml: str  # PlantUML sequence arrow
    mmd_link: str  # Mermaid flowchart link
    puml_link: str  # PlantUML deployment link
    looks: str  # how the legend describes the line
    role: str  # where the deck uses this communication type


VIA: dict[str, ViaStyle] = {
    "user": ViaStyle("user request", "#555555", "->>", "-[#555555]>", "-->", "-[#555555]->",
                     "grey, solid", "a person at the dashboard or the CLI"),
    "http": ViaStyle("HTTP", "#1f6fb4", "->>", "-[#1f6fb4]>", "-->", "-[#1f6fb4,bold]->",
                     "blue, solid, filled head", "between projects (REST APIs)"),
    "amqp-cast": ViaStyle("AMQP cast", "#d9730d", "--)", "-[#d9730d]->>", "-.->",
                          "-[#d9730d,dashed]->", "orange, dashed, open head (async)",
                          "inside a project, through the queue; no reply"),
    "amqp-call": ViaStyle("AMQP call", "#c0392b", "-->>", "-[#c0392b]->", "-.->",
                          "-[#c0392b,dashed]->", "red, dashed, filled head",
                          "inside a project, through the queue; waits for the reply"),
    "sql": ViaStyle("SQL", "#2e8b57", "-)", "-[#2e8b57]>>", "==>", "-[#2e8b57,bold]->",
                    "green, solid, open head", "from a project to its own database"),
    "native": ViaStyle("native API", "#7d3c98", "-)", "-[#7d3c98]>>", "==>",
                       "-[#7d3c98,bold]->", "purple, solid, open head",
                       "from the compute service to its hypervisor driver"),
}  # fmt: skip

#: Arrows of steps a comparison found wrong.
MARK_MMD = {"missing": "--x", "failed": "-x"}
MARK_PUML = {
    "missing": "-[#e00000]->x",
    "failed": "-[#e00000]>x",
    "extra": "-[#e00000]>",
    "out-of-order": "-[#e00000]>",
    "mismatch": "-[#e00000]>",
}
MARK_TEXT = {
    "missing": "MISSING",
    "extra": "EXTRA",
    "out-of-order": "OUT OF ORDER",
    "failed": "FAILED",
    "mismatch": "NOT AS DECLARED",
}

#: Participant shapes by component kind.
PUML_SHAPE = {
    "actor": "actor",
    "client": "boundary",
    "api": "participant",
    "worker": "control",
    "agent": "control",
    "database": "database",
    "queue": "queue",
    "hypervisor": "entity",
}
#: Background of each topology role's box (light, so arrows stay readable on it).
ROLE_COLOR = {
    "controller": "#EAF1FB",
    "network": "#FDF3E7",
    "storage": "#EAF6EC",
    "compute": "#F3EAF8",
}
ROLE_RGB = {
    "controller": "rgb(234,241,251)",
    "network": "rgb(253,243,231)",
    "storage": "rgb(234,246,236)",
    "compute": "rgb(243,234,248)",
}


@dataclass(frozen=True)
class Participant:
    id: str  # identifier safe in both languages
    name: str  # the component's spec name, shown
    kind: str
    shape: str


@dataclass(frozen=True)
class Box:
    title: str
    color: str  # PlantUML colour
    rgb: str  # Mermaid colour
    participants: tuple[Participant, ...]


@dataclass(frozen=True)
class Arrow:
    label: str  # "7" or "7.1"
    title: str  # the step title (main interactions only)
    source: str  # participant id
    target: str
    via: str
    what: str  # "HTTP createServer", "SQL instances, flavors"
    band: int  # the main step's place (steps alternate their background)
    timing: str = ""  # "12.3 ms" for observed arrows
    mark: Mark = ""
    note: str = ""  # why it is marked

    @property
    def main(self) -> bool:
        return "." not in self.label

    @property
    def mmd_arrow(self) -> str:
        return MARK_MMD.get(self.mark, VIA[self.via].mmd)

    @property
    def puml_arrow(self) -> str:
        return MARK_PUML.get(self.mark, VIA[self.via].puml)

    def text(self, markup: Markup) -> str:
        """The arrow's label: the main step's title, what it carries (and its time), and
        above them what a comparison marked, as `markup` writes them."""
        words = markup.escape
        parts = (
            [markup.title.format(self.label, words(self.title))] if self.main and self.title else []
        )
        second = f"{self.label if not parts else ''} {words(self.what)}".strip()
        if self.timing:
            second += markup.timing.format(self.timing)
        parts.append(second)
        if self.mark:
            note = f": {words(self.note)}" if self.note else ""
            parts.insert(0, markup.mark.format(MARK_TEXT[self.mark], note))
        return markup.whole(markup.lines.join(parts))

    def mmd_text(self) -> str:
        return self.text(MMD_MARKUP)

    def puml_text(self) -> str:
        return self.text(PUML_MARKUP)


@dataclass(frozen=True)
class LegendRow:
    label: str
    color: str
    looks: str
    mmd: str
    role: str = ""


@dataclass(frozen=True)
class SequenceDiagram:
    name: str
    title: str
    loose: tuple[Participant, ...]  # participants on no topology node (the user)
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]
    final: str
    legend: tuple[LegendRow, ...]
    marks: tuple[LegendRow, ...] = field(default=())

    @property
    def participants(self) -> tuple[Participant, ...]:
        return self.loose + tuple(p for b in self.boxes for p in b.participants)


# ---------------------------------------------------------------------------
# escaping


#: Mermaid reads `;` as the end of a statement and `<...>` as HTML, and Mermaid 11 leaves
#: its entity codes (`#59;`) undecoded in sequence messages; so these characters are
#: written as look-alikes that need no escaping.
_MMD_LOOKALIKE = str.maketrans({";": "\u037e", "<": "\u2039", ">": "\u203a"})


def mmd_escape(text: str) -> str:
    """Mermaid message text (line breaks as `<br/>` are kept)."""
    return "<br/>".join(part.translate(_MMD_LOOKALIKE) for part in text.split("<br/>"))


def puml_escape(text: str) -> str:
    """PlantUML label text on one line (PlantUML shows `<host>` as written)."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Markup:
    """How an arrow's label is written in one diagram language (`Arrow.text`)."""

    escape: Callable[[str], str]  # the spec's words in it (title, what, note)
    title: str  # "{0}. {1}": the label and the title
    timing: str  # " ({0})"
    mark: str  # "{0}{1}": the mark's text and ": note"
    lines: str  # between its lines
    whole: Callable[[str], str]  # the label as a whole


MMD_MARKUP = Markup(str, "{0}. {1}", " ({0})", "{0}{1}", "<br/>", mmd_escape)
PUML_MARKUP = Markup(
    puml_escape,
    "**{0}. {1}**",
    " <color:#666666>({0})</color>",
    "<color:#e00000>**{0}**{1}</color>",
    "\\n",
    str,
)


def ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


# ---------------------------------------------------------------------------
# building the model


def participant(comp: Component) -> Participant:
    return Participant(
        ident(comp.name), comp.name, comp.kind, PUML_SHAPE.get(comp.kind, "participant")
    )


def what(via: str, name: str | None, tables: Sequence[str] = ()) -> str:
    style = VIA[via]
    if via == "sql" and tables:
        return f"{style.label} {', '.join(tables)}"
    if via == "user":
        return "request"
    return f"{style.label} {name}" if name else style.label


def interaction_what(it: Interaction) -> str:
    return what(it.via, it.operation or it.message or it.call, it.tables)


def sequence_diagram(
    ir: IR, name: str, title: str, arrows: Sequence[Arrow], final: str = ""
) -> SequenceDiagram:
    """Group the arrows' participants by topology node, in order of first appearance."""
    comps = {c.name: c for c in ir.components}
    by_id = {ident(c.name): c for c in ir.components}
    titles = {n.name: n.title for n in ir.topology}
    roles = {n.name: n.role for n in ir.topology}
    order: list[str] = []
    for a in arrows:
        for pid in (a.source, a.target):
            if pid not in order:
                order.append(pid)
    loose: list[Participant] = []
    grouped: dict[str, list[Participant]] = {}
    for pid in order:
        comp = by_id.get(pid)
        if comp is None:  # observed from a component the spec does not know
            p = Participant(pid, pid, "unknown", "participant")
            loose.append(p)
            continue
        p = participant(comps[comp.name])
        if comp.nodes:
            grouped.setdefault(comp.nodes[0], []).append(p)
        else:
            loose.append(p)
    boxes = tuple(
        Box(
            titles.get(node, node),
            ROLE_COLOR.get(roles.get(node, ""), "#F5F5F5"),
            ROLE_RGB.get(roles.get(node, ""), "rgb(245,245,245)"),
            tuple(ps),
        )
        for node, ps in grouped.items()
    )
    used = []
    for a in arrows:
        if a.via not in used:
            used.append(a.via)
    legend = tuple(
        LegendRow(VIA[v].label, VIA[v].color, VIA[v].looks, VIA[v].mmd) for v in VIA if v in used
    )
    marks = tuple(
        LegendRow(MARK_TEXT[m], "#e00000", "", MARK_MMD.get(m, ""))
        for m in ("missing", "extra", "out-of-order", "failed", "mismatch")
        if any(a.mark == m for a in arrows)
    )
    return SequenceDiagram(name, title, tuple(loose), boxes, tuple(arrows), final, legend, marks)


def declared_arrows(ir: IR, sequence: str) -> list[Arrow]:
    seq = next(s for s in ir.sequences if s.name == sequence)
    out: list[Arrow] = []
    for st in seq.steps:
        for i, it in enumerate((st.main, *st.then)):
            out.append(
                Arrow(
                    label=st.label if i == 0 else f"{st.label}.{i}",
                    title=st.title if i == 0 else "",
                    source=ident(it.source_component),
                    target=ident(it.target_component),
                    via=it.via,
                    what=interaction_what(it),
                    band=seq.steps.index(st),
                )
            )
    return out


def declared(ir: IR, sequence: str) -> SequenceDiagram:
    seq = next(s for s in ir.sequences if s.name == sequence)
    return sequence_diagram(
        ir, seq.name, f"{seq.name}: {seq.title}", declared_arrows(ir, sequence), seq.final
    )


# ---------------------------------------------------------------------------
# topology


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    via: str
    label: str


@dataclass(frozen=True)
class TopologyDiagram:
    title: str
    loose: tuple[Participant, ...]
    boxes: tuple[Box, ...]
    links: tuple[Link, ...]
    legend: tuple[LegendRow, ...]


def topology(ir: IR) -> TopologyDiagram:
    """Nodes with their components, and one link per pair and communication type used."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for seq in ir.sequences:
        for st in seq.steps:
            for it in (st.main, *st.then):
                key = (it.source_component, it.target_component, it.via)
                names = seen.setdefault(key, [])
                n = it.operation or it.message or it.call
                if n and n not in names:
                    names.append(n)
    links = tuple(Link(ident(s), ident(t), via, VIA[via].label) for (s, t, via) in seen)
    boxes = []
    for node in ir.topology:
        ps = tuple(participant(ir.component(c)) for c in node.components)
        title = f"{node.title} (x{node.count})" if node.count > 1 else node.title
        boxes.append(
            Box(title, ROLE_COLOR.get(node.role, "#F5F5F5"), ROLE_RGB.get(node.role, ""), ps)
        )
    placed = {c for n in ir.topology for c in n.components}
    linked = {x for s, t, _ in seen for x in (s, t)}
    loose = tuple(
        participant(c) for c in ir.components if c.name not in placed and c.name in linked
    )
    legend = tuple(
        LegendRow(VIA[v].label, VIA[v].color, VIA[v].looks, VIA[v].mmd_link, VIA[v].role)
        for v in VIA
        if any(lk.via == v for lk in links)
    )
    return TopologyDiagram(
        f"{ir.stack.title}: deployment topology and communication types",
        loose,
        tuple(boxes),
        links,
        legend,
    )


# ---------------------------------------------------------------------------
# rendering

#: How Mermaid draws each arrow, for the legend note (Mermaid has no colours per arrow).
MMD_LOOKS = {
    "->>": "solid line, filled head",
    "--)": "dotted line, open head",
    "-->>": "dotted line, filled head",
    "-)": "solid line, open head",
}
MMD_NODE = {
    "actor": '{id}(["{name}"])',
    "database": '{id}[("{name}")]',
    "queue": '{id}[["{name}"]]',
    "hypervisor": '{id}{{{{"{name}"}}}}',
}
PUML_ELEMENT = {
    "actor": "actor",
    "database": "database",
    "queue": "queue",
    "hypervisor": "node",
    "client": "boundary",
}


def bands(d: SequenceDiagram) -> list[tuple[bool, list[Arrow]]]:
    """The arrows grouped by main step; every other step gets a shaded background."""
    out: list[tuple[bool, list[Arrow]]] = []
    for a in d.arrows:
        if out and out[-1][1][-1].band == a.band:
            out[-1][1].append(a)
        else:
            out.append((len(out) % 2 == 1, [a]))
    return out


def mmd_legend(d: SequenceDiagram) -> str:
    rows = [f"{r.label}: {MMD_LOOKS.get(r.mmd, r.mmd)}" for r in d.legend]
    rows += [f"{r.label}: red background" for r in d.marks]
    return mmd_escape(" · ".join(rows))


def diagram_env(env: Environment) -> Environment:
    """`env` with the filters the diagram templates use."""
    out = env.overlay()
    out.filters["mmd"] = mmd_escape
    out.filters["puml"] = puml_escape
    out.filters["bands"] = bands
    out.filters["mmd_legend"] = mmd_legend
    out.filters["mmd_node"] = lambda p: MMD_NODE.get(p.kind, '{id}["{name}"]').format(
        id=p.id, name=p.name
    )
    out.filters["puml_element"] = lambda p: PUML_ELEMENT.get(p.kind, "component")
    return out


def render_sequence(env: Environment, d: SequenceDiagram, fmt: str, header: str = "") -> str:
    ext = {"mermaid": "mmd", "plantuml": "puml"}[fmt]
    return env.get_template(f"diagrams/sequence.{ext}.j2").render(d=d, header=header, via=VIA)


def render_topology(env: Environment, d: TopologyDiagram, fmt: str, header: str = "") -> str:
    ext = {"mermaid": "mmd", "plantuml": "puml"}[fmt]
    return env.get_template(f"diagrams/topology.{ext}.j2").render(d=d, header=header, via=VIA)


def comment_header(prefix: str, *sources: str) -> str:
    return (
        f"{prefix} Generated by specstack from {', '.join(sources)}.\n"
        f"{prefix} Do not edit: change the spec or templates/, then run `specstack generate`.\n"
    )


class DiagramsTarget:
    name = "diagrams"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        env = diagram_env(ctx.templates)
        out: list[OutputFile] = []
        for seq in ir.sequences:
            src = ctx.source(f"sequences/{seq.name}.yaml")
            d = declared(ir, seq.name)
            out.append(
                OutputFile(
                    f"diagrams/{seq.name}.mmd",
                    render_sequence(env, d, "mermaid", comment_header("%%", src)),
                )
            )
            out.append(
                OutputFile(
                    f"diagrams/{seq.name}.puml",
                    render_sequence(env, d, "plantuml", comment_header("'", src)),
                )
            )
        srcs = (
            ctx.source("topology.yaml"),
            ctx.source("components.yaml"),
            ctx.source("sequences/*.yaml"),
        )
        t = topology(ir)
        out.append(
            OutputFile(
                "diagrams/topology.mmd",
                render_topology(env, t, "mermaid", comment_header("%%", *srcs)),
            )
        )
        out.append(
            OutputFile(
                "diagrams/topology.puml",
                render_topology(env, t, "plantuml", comment_header("'", *srcs)),
            )
        )
        out.append(
            OutputFile(
                "diagrams/README.md",
                env.get_template("diagrams/README.md.j2").render(
                    ir=ir, header=md_header(*srcs), legend=[VIA[v] for v in VIA]
                ),
            )
        )
        return out


def sources_of(files: Iterable[OutputFile]) -> dict[str, str]:
    """The PlantUML sources among `files`, by the SVG each becomes."""
    return {
        f.path[: -len(".puml")] + ".svg": f.content
        for f in files
        if f.path.startswith("diagrams/") and f.path.endswith(".puml")
    }
