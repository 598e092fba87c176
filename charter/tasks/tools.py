"""The tools a model may call in Charter's tasks, and how a call is checked and run: shared by
the synthetic demonstrations (`charter.data.synthetic`), the held-out evaluation and, later,
rewards for RL.

    calculator    exact arithmetic on +, -, *, / and parentheses (`calculate`)
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jsonschema

from charter.chat import Tool, ToolResultBlock, ToolUseBlock

CALCULATOR = Tool(
    "calculator",
    "Evaluate an arithmetic expression exactly (+, -, *, /, parentheses).",
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 347 * 829"}},
        "required": ["expression"],
    },
)

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, as text ("287663", "2.5"). Only numbers, the four
    operations and parentheses are allowed; anything else is a ValueError naming it."""
    try:
        tree = ast.parse(expression.replace("×", "*").replace("x", "*"), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from e

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported in an arithmetic expression: {ast.unparse(node)!r}")

    try:
        result = value(tree.body)
    except ZeroDivisionError as e:
        raise ValueError("division by zero") from e
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return str(round(result, 10) if isinstance(result, float) else result)


# The tools the evaluation can run: name → function of the call's input, returning the result.
TOOL_FUNCTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "calculator": lambda tool_input: calculate(str(tool_input["expression"])),
}


def tool_call_is_valid(call: ToolUseBlock, tools: Sequence[Tool]) -> bool:
    """The call names an offered tool and its input satisfies that tool's input schema."""
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        return False
    try:
        jsonschema.validate(call.input, tool.input_schema)
    except jsonschema.ValidationError:
        return False
    return True


def run_tool(call: ToolUseBlock, tools: Sequence[Tool]) -> ToolResultBlock:
    """The result the model reads back: the tool's output, or an error it can react to."""
    if not tool_call_is_valid(call, tools) or call.name not in TOOL_FUNCTIONS:
        return ToolResultBlock(call.id, f"invalid call to tool {call.name!r}", is_error=True)
    try:
        return ToolResultBlock(call.id, TOOL_FUNCTIONS[call.name](call.input))
    except ValueError as e:
        return ToolResultBlock(call.id, str(e), is_error=True)
