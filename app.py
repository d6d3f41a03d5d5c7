"""Placeholder until the serving issue lands: the Gradio demo is built from demo/."""

import gradio as gr

NOTICE = "ichflax — research and education use only, not a medical device. The demo is being built."

if __name__ == "__main__":
  with gr.Blocks(title="ichflax") as app:
    gr.Markdown(NOTICE)
  app.launch(server_name="127.0.0.1", server_port=7860)
