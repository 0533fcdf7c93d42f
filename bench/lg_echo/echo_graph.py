"""The peer's echo graph: one node that answers the last user message with ``echo: <text>``.

Loaded by LangGraph's in-memory Agent Server (``langgraph.json`` beside this file), never by
RunnerHost: it imports only ``langgraph``, which lives in the peer's own virtualenv.
"""
from langgraph.graph import END, START, MessagesState, StateGraph


def echo(state: MessagesState) -> dict:
    last = state["messages"][-1]
    return {"messages": [{"role": "assistant", "content": f"echo: {last.content}"}]}


builder = StateGraph(MessagesState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
